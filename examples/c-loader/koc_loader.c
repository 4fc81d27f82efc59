/* koc_loader: a Linux 6.1 module loader for x86_64 in C, speaking the koconform protocol.
 *
 * It reads requests from stdin and answers on stdout, one JSON object per line, as
 * conformance/PROTOCOL.md says; it was written from that file and the spec's facts only.
 * For each `load` it runs the kernel's phases on the module's bytes:
 *
 *   check     elf_validity_check + setup_load_info: ELF header, section headers in the
 *             file, the section name table, a symbol table, .gnu.linkonce.this_module
 *   layout    layout_and_allocate: the W+X check, the five section groups of core and init
 *             with the strict-RWX page rounding, the kallsyms tables, the two allocations
 *   resolve   simplify_symbols against the environment's exports
 *   relocate  apply_relocate_add for x86_64 as 6.1 does it
 *
 * and answers with status/errno/phase, layout, regions, symbols and sections. It prints no
 * kernel log, runs no module code (no init/exit), and does not implement modversions,
 * vermagic, licences or namespaces: the vectors that need those are listed, with reasons, in
 * expected-failures.txt. libc only. Public domain (CC0).
 */
#include <elf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define SHF_RO_AFTER_INIT_ 0x00200000u    /* the kernel's own section flag */
#define SHF_RELA_LIVEPATCH_ 0x00100000u
#define SHN_LIVEPATCH_ 0xff20u
/* x86_64 module area: MODULES_VADDR .. MODULES_END (asm/pgtable_64_types.h, KASLR kernel). */
#define MODULES_ROOM (0xffffffffff000000ull - 0xffffffffc0000000ull)

/* ---- the kernel's exported symbols -------------------------------------------------- */
struct ksym { char *name; uint64_t address; int removed; };
struct symtable { char *id; struct ksym *syms; size_t count; };

static struct symtable *environments;     /* declared by `environment` requests */
static size_t n_environments;

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct ksym *)a)->name, ((const struct ksym *)b)->name);
}

/* A table from a JSON object {name: {address, ...} or null}, sorted by name for bsearch. */
static int read_symbols(const struct json *obj, struct symtable *t)
{
	t->syms = calloc(obj->count ? obj->count : 1, sizeof(*t->syms));
	if (!t->syms)
		return -1;
	for (size_t i = 0; i < obj->count; i++) {
		struct ksym *k = &t->syms[t->count++];
		unsigned long long address = 0;
		k->name = strdup(obj->keys[i]);
		k->removed = obj->items[i]->type == JSON_NULL;
		if (!k->name || (!k->removed && json_u64(json_get(obj->items[i], "address"), &address)))
			return -1;
		k->address = address;
	}
	qsort(t->syms, t->count, sizeof(*t->syms), by_name);
	return 0;
}

static struct ksym *lookup(const struct symtable *t, const char *name)
{
	struct ksym key = { (char *)name, 0, 0 };
	return t ? bsearch(&key, t->syms, t->count, sizeof(key), by_name) : NULL;
}

static void free_symbols(struct symtable *t)
{
	for (size_t i = 0; i < t->count; i++)
		free(t->syms[i].name);
	free(t->syms);
	free(t->id);
}

/* ---- one load: the kernel's struct load_info and what it allocates ---------------------- */
struct region { const char *name; uint64_t base; uint32_t size; uint8_t *mem; };

struct load {
	uint8_t *buf;                 /* the module file: also the kernel's temporary copy */
	size_t len;
	Elf64_Ehdr hdr;
	Elf64_Shdr *sh;               /* section headers (sh_addr, sh_flags are rewritten) */
	unsigned shnum;
	unsigned sym, str, mod, info, vers, pcpu;        /* info->index */
	int *init;                    /* per section: -1 not laid out, 0 core, 1 init */
	uint32_t *offset;             /* per section: offset in its region */
	struct region core, init_r;
	uint64_t copy_base, percpu_base;
	/* the request */
	const struct symtable *base, *overrides;
	uint64_t page;
	int strict_rwx, unload, kallsyms, kallsyms_all, smp;
	int has_init_base;
	/* the outcome */
	const char *error, *phase;    /* errno name and phase of a rejection */
	int faulted;
	char **undef_names;           /* undefined symbols after simplify_symbols */
	uint64_t *undef_values;
	size_t n_undef;
};

static int reject(struct load *ld, const char *err)
{
	ld->error = err;
	return -1;
}

static int fault(struct load *ld)
{
	ld->faulted = 1;
	return -1;
}

/* A NUL-terminated string of the file at off, or "" past its end. */
static const char *file_string(const struct load *ld, uint64_t off)
{
	if (off >= ld->len || !memchr(ld->buf + off, 0, ld->len - off))
		return "";
	return (const char *)ld->buf + off;
}

static const char *secname(const struct load *ld, unsigned i)
{
	return file_string(ld, ld->sh[ld->hdr.e_shstrndx].sh_offset + ld->sh[i].sh_name);
}

/* find_sec: the first SHF_ALLOC section of that name (0: none). */
static unsigned find_sec(const struct load *ld, const char *name)
{
	for (unsigned i = 1; i < ld->shnum; i++)
		if ((ld->sh[i].sh_flags & SHF_ALLOC) && !strcmp(secname(ld, i), name))
			return i;
	return 0;
}

/* Memory the kernel can reach while loading: the core and init allocations and the copy.
 * Returns a pointer to n bytes at address, or NULL (a fault). */
static uint8_t *at(struct load *ld, uint64_t address, uint64_t n)
{
	struct region *r[2] = { &ld->core, &ld->init_r };
	for (int k = 0; k < 2; k++)
		if (r[k]->mem && address - r[k]->base < r[k]->size && n <= r[k]->size - (address - r[k]->base))
			return r[k]->mem + (address - r[k]->base);
	if (address - ld->copy_base < ld->len && n <= ld->len - (address - ld->copy_base))
		return ld->buf + (address - ld->copy_base);
	return NULL;
}

static uint64_t get_le(const uint8_t *p, int size)
{
	uint64_t v = 0;
	for (int i = size - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void put_le(uint8_t *p, uint64_t v, int size)
{
	for (int i = 0; i < size; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* ---- check: elf_validity_check, setup_load_info, rewrite_section_headers --------------- */
static int in_file(const struct load *ld, const Elf64_Shdr *s)
{
	return s->sh_offset + s->sh_size >= s->sh_offset && s->sh_offset + s->sh_size <= ld->len;
}

static int check(struct load *ld)
{
	Elf64_Ehdr *h = &ld->hdr;
	if (ld->len < sizeof(*h))
		return reject(ld, "ENOEXEC");
	memcpy(h, ld->buf, sizeof(*h));
	/* The kernel checks the magic, not EI_CLASS, EI_DATA or EI_VERSION. */
	if (memcmp(h->e_ident, ELFMAG, SELFMAG) || h->e_type != ET_REL || h->e_machine != EM_X86_64 ||
	    h->e_shentsize != sizeof(Elf64_Shdr))
		return reject(ld, "ENOEXEC");
	if (h->e_shoff >= ld->len || (uint64_t)h->e_shnum * sizeof(Elf64_Shdr) > ld->len - h->e_shoff)
		return reject(ld, "ENOEXEC");
	ld->shnum = h->e_shnum;
	ld->sh = malloc((ld->shnum ? ld->shnum : 1) * sizeof(Elf64_Shdr));
	ld->init = malloc((ld->shnum ? ld->shnum : 1) * sizeof(int));
	ld->offset = calloc(ld->shnum ? ld->shnum : 1, sizeof(uint32_t));
	if (!ld->sh || !ld->init || !ld->offset)
		return reject(ld, "ENOMEM");
	memcpy(ld->sh, ld->buf + h->e_shoff, ld->shnum * sizeof(Elf64_Shdr));
	if (h->e_shstrndx == SHN_UNDEF || h->e_shstrndx >= ld->shnum)
		return reject(ld, "ENOEXEC");
	const Elf64_Shdr *strs = &ld->sh[h->e_shstrndx];
	if (!in_file(ld, strs) || strs->sh_size == 0 || ld->buf[strs->sh_offset + strs->sh_size - 1] != 0)
		return reject(ld, "ENOEXEC");
	if (ld->sh[0].sh_type != SHT_NULL || ld->sh[0].sh_size || ld->sh[0].sh_addr)
		return reject(ld, "ENOEXEC");
	for (unsigned i = 1; i < ld->shnum; i++) {
		const Elf64_Shdr *s = &ld->sh[i];
		if (s->sh_type == SHT_NULL || s->sh_type == SHT_NOBITS)
			continue;
		if (s->sh_type == SHT_SYMTAB && (s->sh_link == SHN_UNDEF || s->sh_link >= ld->shnum))
			return reject(ld, "ENOEXEC");
		if (!in_file(ld, s) || ((s->sh_flags & SHF_ALLOC) && s->sh_name >= strs->sh_size))
			return reject(ld, "ENOEXEC");
	}
	/* setup_load_info: .modinfo, the first symbol table, the module struct, __versions, percpu. */
	ld->info = find_sec(ld, ".modinfo");
	for (unsigned i = 1; i < ld->shnum && !ld->sym; i++)
		if (ld->sh[i].sh_type == SHT_SYMTAB)
			ld->sym = i, ld->str = ld->sh[i].sh_link;
	if (!ld->sym)
		return reject(ld, "ENOEXEC");
	ld->mod = find_sec(ld, ".gnu.linkonce.this_module");
	if (!ld->mod)
		return reject(ld, "ENOEXEC");
	ld->vers = find_sec(ld, "__versions");
	ld->pcpu = ld->smp ? find_sec(ld, ".data..percpu") : 0;
	/* rewrite_section_headers: every section "is" in the copy until it is moved. */
	for (unsigned i = 1; i < ld->shnum; i++)
		ld->sh[i].sh_addr = ld->copy_base + ld->sh[i].sh_offset;
	ld->sh[ld->vers].sh_flags &= ~(uint64_t)SHF_ALLOC;
	ld->sh[ld->info].sh_flags &= ~(uint64_t)SHF_ALLOC;
	return 0;
}

/* ---- layout: layout_sections, layout_symtab, move_module (6.1) --------------------------- */
static uint32_t align_u32(uint32_t x, uint64_t a)
{
	uint32_t mask = (uint32_t)((a ? a : 1) - 1);  /* the kernel's ALIGN() on an unsigned int */
	return (x + mask) & ~mask;
}

static uint32_t strict_align(const struct load *ld, uint32_t size)
{
	return ld->strict_rwx ? align_u32(size, ld->page) : size;
}

/* module_get_offset: place section i at the end of a region of *size bytes. */
static void place(struct load *ld, unsigned i, int init, uint32_t *size)
{
	ld->init[i] = init;
	ld->offset[i] = align_u32(*size, ld->sh[i].sh_addralign);
	*size = ld->offset[i] + (uint32_t)ld->sh[i].sh_size;
}

static int is_init_section(const struct load *ld, const char *name)
{
	return !strncmp(name, ".init", 5) || (!ld->unload && !strncmp(name, ".exit", 5));
}

static void layout_sections(struct load *ld)
{
	/* (required flags, forbidden flags): text, rodata, ro_after_init, data, the rest */
	static const uint64_t masks[5][2] = {
		{ SHF_EXECINSTR | SHF_ALLOC, 0 }, { SHF_ALLOC, SHF_WRITE },
		{ SHF_RO_AFTER_INIT_ | SHF_ALLOC, 0 }, { SHF_WRITE | SHF_ALLOC, 0 }, { SHF_ALLOC, 0 },
	};
	for (unsigned i = 0; i < ld->shnum; i++)
		ld->init[i] = -1;
	for (int init = 0; init <= 1; init++) {
		uint32_t *size = init ? &ld->init_r.size : &ld->core.size;
		for (int m = 0; m < 5; m++) {
			for (unsigned i = 0; i < ld->shnum; i++) {
				uint64_t f = ld->sh[i].sh_flags;
				if ((f & masks[m][0]) != masks[m][0] || (f & masks[m][1]) || ld->init[i] >= 0 ||
				    is_init_section(ld, secname(ld, i)) != init)
					continue;
				place(ld, i, init, size);
			}
			if (m == 0 || m == 1 || m == 4 || (m == 2 && !init))
				*size = strict_align(ld, *size);
		}
	}
}

/* is_core_symbol (6.1): kept in the core kallsyms table. */
static int is_core_symbol(const struct load *ld, const Elf64_Sym *s)
{
	if (s->st_shndx == SHN_UNDEF || s->st_shndx >= ld->shnum || !s->st_name)
		return 0;
	if (ld->kallsyms_all && ld->pcpu && s->st_shndx == ld->pcpu)
		return 1;
	const Elf64_Shdr *sec = &ld->sh[s->st_shndx];
	return (sec->sh_flags & SHF_ALLOC) && (ld->kallsyms_all || (sec->sh_flags & SHF_EXECINSTR)) &&
	       ld->init[s->st_shndx] != 1;
}

static void layout_symtab(struct load *ld)
{
	Elf64_Shdr *symsec = &ld->sh[ld->sym], *strsec = &ld->sh[ld->str];
	uint64_t nsrc = symsec->sh_size / sizeof(Elf64_Sym), ndst = 0, strtab_size = 0;
	symsec->sh_flags |= SHF_ALLOC;
	place(ld, ld->sym, 1, &ld->init_r.size);
	for (uint64_t k = 0; k < nsrc; k++) {
		Elf64_Sym s;
		memcpy(&s, ld->buf + symsec->sh_offset + k * sizeof(s), sizeof(s));
		if (k == 0 || is_core_symbol(ld, &s)) {
			strtab_size += strlen(file_string(ld, strsec->sh_offset + s.st_name)) + 1;
			ndst++;
		}
	}
	uint32_t size = align_u32(ld->core.size, symsec->sh_addralign);
	size += (uint32_t)(ndst * sizeof(Elf64_Sym) + strtab_size + ndst);
	ld->core.size = strict_align(ld, size);
	strsec->sh_flags |= SHF_ALLOC;
	place(ld, ld->str, 1, &ld->init_r.size);
	size = align_u32(ld->init_r.size, 8);                  /* struct mod_kallsyms */
	size += 32 + (uint32_t)nsrc;                           /* it, then one type byte per symbol */
	ld->init_r.size = strict_align(ld, size);
}

static int allocate(struct load *ld, struct region *r)
{
	if (r->size > MODULES_ROOM)                  /* module_alloc: larger than the module area */
		return reject(ld, "ENOMEM");
	r->mem = calloc(r->size, 1);
	return r->mem ? 0 : reject(ld, "ENOMEM");
}

static int layout(struct load *ld)
{
	for (unsigned i = 0; i < ld->shnum; i++)               /* module_enforce_rwx_sections */
		if (ld->strict_rwx && (ld->sh[i].sh_flags & (SHF_WRITE | SHF_EXECINSTR)) == (SHF_WRITE | SHF_EXECINSTR))
			return reject(ld, "ENOEXEC");
	ld->sh[ld->pcpu].sh_flags &= ~(uint64_t)SHF_ALLOC;
	unsigned ro = find_sec(ld, ".data..ro_after_init"), jump = find_sec(ld, "__jump_table");
	if (ro)
		ld->sh[ro].sh_flags |= SHF_RO_AFTER_INIT_;
	if (jump)
		ld->sh[jump].sh_flags |= SHF_RO_AFTER_INIT_;
	layout_sections(ld);
	if (ld->kallsyms)
		layout_symtab(ld);
	/* move_module: one allocation for core, one for init when it is not empty. */
	if (ld->core.size == 0 || allocate(ld, &ld->core))
		return reject(ld, "ENOMEM");
	if (!ld->has_init_base)                               /* the next area, after a guard page */
		ld->init_r.base = ld->core.base + (ld->core.size + ld->page - 1) / ld->page * ld->page + ld->page;
	if (ld->init_r.size && allocate(ld, &ld->init_r))
		return -1;
	for (unsigned i = 0; i < ld->shnum; i++) {
		if (ld->init[i] < 0)
			continue;
		struct region *r = ld->init[i] ? &ld->init_r : &ld->core;
		Elf64_Shdr *s = &ld->sh[i];
		uint64_t dest = r->base + ld->offset[i];
		if (s->sh_type != SHT_NOBITS && s->sh_size) {
			uint8_t *to = at(ld, dest, s->sh_size);
			if (!to)
				return fault(ld);
			memcpy(to, ld->buf + s->sh_offset, s->sh_size);
		}
		s->sh_addr = dest;
	}
	return 0;
}

/* ---- resolve: simplify_symbols ---------------------------------------------------------- */
static void add_undefined(struct load *ld, const char *name, uint64_t value)
{
	char **names = realloc(ld->undef_names, (ld->n_undef + 1) * sizeof(*names));
	uint64_t *values = realloc(ld->undef_values, (ld->n_undef + 1) * sizeof(*values));
	if (names)
		ld->undef_names = names;
	if (values)
		ld->undef_values = values;
	if (names && values) {
		ld->undef_names[ld->n_undef] = strdup(name);
		ld->undef_values[ld->n_undef++] = value;
	}
}

static int resolve(struct load *ld)
{
	const Elf64_Shdr *symsec = &ld->sh[ld->sym];
	uint64_t n = symsec->sh_size / sizeof(Elf64_Sym);
	uint8_t *table = at(ld, symsec->sh_addr, n * sizeof(Elf64_Sym));
	int ret = 0;
	if (!table)
		return fault(ld);
	for (uint64_t k = 1; k < n; k++) {       /* every symbol, the last error wins */
		Elf64_Sym s;
		memcpy(&s, table + k * sizeof(s), sizeof(s));
		const char *name = file_string(ld, ld->sh[ld->str].sh_offset + s.st_name);
		switch (s.st_shndx) {
		case SHN_COMMON:
			if (strncmp(name, "__gnu_lto", 9))
				ret = reject(ld, "ENOEXEC");     /* "please compile with -fno-common" */
			break;
		case SHN_ABS:
		case SHN_LIVEPATCH_:
			break;
		case SHN_UNDEF: {
			const struct ksym *ks = lookup(ld->overrides, name);
			if (!ks)
				ks = lookup(ld->base, name);
			if (ks && !ks->removed) {
				s.st_value = ks->address;
				add_undefined(ld, name, s.st_value);
			} else if (ELF64_ST_BIND(s.st_info) == STB_WEAK || !strcmp(name, "_GLOBAL_OFFSET_TABLE_")) {
				add_undefined(ld, name, s.st_value);
			} else {
				ret = reject(ld, "ENOENT");      /* "Unknown symbol" */
			}
			break;
		}
		default:
			if (s.st_shndx >= ld->shnum)
				ret = reject(ld, "ENOEXEC");     /* "invalid section index" */
			else if (ld->pcpu && s.st_shndx == ld->pcpu)
				s.st_value += ld->percpu_base;
			else
				s.st_value += ld->sh[s.st_shndx].sh_addr;
		}
		memcpy(table + k * sizeof(s), &s, sizeof(s));
	}
	return ret;
}

/* ---- relocate: apply_relocations, x86_64 __apply_relocate_add (6.1) --------------------- */
static int apply_relocate_add(struct load *ld, unsigned relsec)
{
	const Elf64_Shdr *rs = &ld->sh[relsec];
	uint64_t n = rs->sh_size / sizeof(Elf64_Rela);
	const uint8_t *rela = at(ld, rs->sh_addr, n * sizeof(Elf64_Rela));
	if (!rela)
		return fault(ld);
	for (uint64_t i = 0; i < n; i++) {
		Elf64_Rela r;
		memcpy(&r, rela + i * sizeof(r), sizeof(r));
		uint64_t loc = ld->sh[rs->sh_info].sh_addr + r.r_offset;
		const uint8_t *sym = at(ld, ld->sh[ld->sym].sh_addr + ELF64_R_SYM(r.r_info) * sizeof(Elf64_Sym),
					sizeof(Elf64_Sym));
		if (!sym)
			return fault(ld);
		uint64_t val = get_le(sym + offsetof(Elf64_Sym, st_value), 8) + (uint64_t)r.r_addend;
		int size;
		switch (ELF64_R_TYPE(r.r_info)) {
		case R_X86_64_NONE: continue;
		case R_X86_64_64: size = 8; break;
		case R_X86_64_32: size = 4; break;
		case R_X86_64_32S: size = 4; break;
		case R_X86_64_PC32:
		case R_X86_64_PLT32: size = 4; val -= loc; break;
		case R_X86_64_PC64: size = 8; val -= loc; break;
		default: return reject(ld, "ENOEXEC");        /* "Unknown rela relocation" */
		}
		uint8_t *p = at(ld, loc, (uint64_t)size);
		if (!p)
			return fault(ld);
		for (int b = 0; b < size; b++)            /* 6.1: the place must be zero */
			if (p[b])
				return reject(ld, "ENOEXEC");
		put_le(p, val, size);                     /* written first, then checked (6.1) */
		if (ELF64_R_TYPE(r.r_info) == R_X86_64_32 && val != (uint32_t)val)
			return reject(ld, "ENOEXEC");
		if (ELF64_R_TYPE(r.r_info) == R_X86_64_32S && (int64_t)val != (int32_t)val)
			return reject(ld, "ENOEXEC");
		/* PC32/PLT32: the 6.1 overflow check is compiled out; the value is truncated. */
	}
	return 0;
}

static int relocate(struct load *ld)
{
	for (unsigned i = 1; i < ld->shnum; i++) {
		const Elf64_Shdr *s = &ld->sh[i];
		if (s->sh_info >= ld->shnum || !(ld->sh[s->sh_info].sh_flags & SHF_ALLOC))
			continue;
		if (s->sh_flags & SHF_RELA_LIVEPATCH_)
			continue;
		if (s->sh_type == SHT_REL)
			return reject(ld, "ENOEXEC");     /* "REL relocation unsupported" */
		if (s->sh_type == SHT_RELA && apply_relocate_add(ld, i))
			return -1;
	}
	return 0;
}

/* ---- the answer ----------------------------------------------------------------------- */
/* The section's key: its name, or NAME#INDEX when the name is not unique in the file. */
static void write_key(const struct load *ld, unsigned i)
{
	const char *name = secname(ld, i);
	int dup = 0;
	for (unsigned j = 0; j < ld->shnum && !dup; j++)
		dup = j != i && !strcmp(secname(ld, j), name);
	if (!dup) {
		json_write_bytes(stdout, name, strlen(name));
		return;
	}
	size_t len = strlen(name);
	char *key = malloc(len + 16);
	if (!key)
		return json_write_bytes(stdout, name, len);
	snprintf(key, len + 16, "%s#%u", name, i);
	json_write_bytes(stdout, key, strlen(key));
	free(key);
}

static void write_result(struct load *ld, int reached)
{
	printf("{\"status\":");
	if (ld->faulted)
		printf("\"faulted\",\"errno\":null,\"phase\":\"%s\"}", ld->phase);
	else if (ld->error)
		printf("\"rejected\",\"errno\":\"%s\",\"phase\":\"%s\"}", ld->error, ld->phase);
	if (ld->faulted || ld->error)
		return;
	printf("\"loaded\",\"errno\":null,\"phase\":null");
	if (reached >= 1) {                         /* layout */
		printf(",\"regions\":{\"core\":{\"address\":\"0x%llx\",\"size\":\"0x%x\"}",
		       (unsigned long long)ld->core.base, ld->core.size);
		if (ld->init_r.size)
			printf(",\"init\":{\"address\":\"0x%llx\",\"size\":\"0x%x\"}",
			       (unsigned long long)ld->init_r.base, ld->init_r.size);
		printf("},\"layout\":{");
		for (unsigned i = 0, first = 1; i < ld->shnum; i++) {
			if (ld->init[i] < 0)
				continue;
			printf(first ? "" : ",");
			first = 0;
			write_key(ld, i);
			printf(":{\"region\":\"%s\",\"offset\":\"0x%x\",\"address\":\"0x%llx\"}",
			       ld->init[i] ? "init" : "core", ld->offset[i], (unsigned long long)ld->sh[i].sh_addr);
		}
		printf("},\"sections\":{");
		for (unsigned i = 0, first = 1; i < ld->shnum; i++) {
			if (ld->init[i] < 0 || ld->sh[i].sh_type == SHT_NOBITS)
				continue;
			printf(first ? "" : ",");
			first = 0;
			write_key(ld, i);
			const uint8_t *p = at(ld, ld->sh[i].sh_addr, ld->sh[i].sh_size);
			putchar(':');
			putchar('"');
			for (uint64_t b = 0; p && b < ld->sh[i].sh_size; b++)
				printf("%02x", p[b]);
			putchar('"');
		}
		printf("}");
	}
	if (reached >= 2) {                         /* resolve */
		printf(",\"symbols\":{");
		for (size_t k = 0; k < ld->n_undef; k++) {
			printf(k ? "," : "");
			json_write_bytes(stdout, ld->undef_names[k], strlen(ld->undef_names[k]));
			printf(":\"0x%llx\"", (unsigned long long)ld->undef_values[k]);
		}
		printf("}");
	}
	printf("}");
}

static int enabled(const struct json *config, const char *option)
{
	const struct json *v = json_get(config, option);
	const char *s = json_string(v);
	return v && (v->type == JSON_TRUE || (s && (!strcmp(s, "y") || !strcmp(s, "m"))));
}

static const char *PHASES[] = { "check", "layout", "resolve", "relocate" };

/* A `load` request: run the phases up to stop_after, print the result. */
static const char *load(const struct json *req, const struct symtable *base)
{
	static const unsigned char b64[256] = {
		['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8,
		['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
		['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
		['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
		['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
		['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
		['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
		['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
	};   /* value + 1; 0: not a base64 digit */
	const struct json *env = json_get(req, "environment"), *profile = json_get(req, "profile");
	const struct json *config = json_get(profile, "config"), *regions = json_get(env, "regions");
	const struct json *ko = json_get(req, "ko_base64"), *overrides = json_get(env, "symbols");
	const char *stop = json_string(json_get(req, "stop_after"));
	struct load ld = { 0 };
	struct symtable over = { 0 };
	unsigned long long page = 0, core = 0, v = 0;
	const char *problem = NULL;

	if (!ko || ko->type != JSON_STRING || !overrides || overrides->type != JSON_OBJECT || !stop ||
	    json_u64(json_get(profile, "page_size"), &page) || !page ||
	    json_u64(json_get(regions, "core"), &core))
		return "load request without ko_base64, environment.symbols, regions.core, page_size or stop_after";
	/* The module's bytes, from base64: four digits make three bytes. */
	ld.buf = malloc(ko->len / 4 * 3 + 3);
	if (!ld.buf)
		return "out of memory";
	uint32_t acc = 0;
	int digits = 0;
	for (size_t i = 0; i < ko->len && ko->text[i] != '='; i++) {
		unsigned d = b64[(unsigned char)ko->text[i]];
		if (!d) {
			free(ld.buf);
			return "ko_base64 is not base64";
		}
		acc = acc << 6 | (d - 1);
		if (++digits == 4) {
			ld.buf[ld.len++] = (uint8_t)(acc >> 16);
			ld.buf[ld.len++] = (uint8_t)(acc >> 8);
			ld.buf[ld.len++] = (uint8_t)acc;
			acc = 0, digits = 0;
		}
	}
	if (digits >= 2)
		ld.buf[ld.len++] = (uint8_t)(acc >> (digits == 2 ? 4 : 10));
	if (digits == 3)
		ld.buf[ld.len++] = (uint8_t)(acc >> 2);

	ld.base = base;
	if (read_symbols(overrides, &over)) {
		problem = "bad environment.symbols";
		goto out;
	}
	ld.overrides = &over;
	ld.page = page;
	ld.core.base = core;
	ld.has_init_base = !json_u64(json_get(regions, "init"), &v);
	ld.init_r.base = v;
	ld.copy_base = json_u64(json_get(regions, "copy"), &v) ? 0 : v;
	ld.percpu_base = json_u64(json_get(regions, "percpu"), &v) ? 0 : v;
	ld.strict_rwx = enabled(config, "CONFIG_STRICT_MODULE_RWX");
	ld.unload = enabled(config, "CONFIG_MODULE_UNLOAD");
	ld.kallsyms = enabled(config, "CONFIG_KALLSYMS");
	ld.kallsyms_all = enabled(config, "CONFIG_KALLSYMS_ALL");
	ld.smp = enabled(config, "CONFIG_SMP");

	int (*const phases[])(struct load *) = { check, layout, resolve, relocate };
	int reached = -1;
	for (int k = 0; k < 4; k++) {
		ld.phase = PHASES[k];
		if (phases[k](&ld))
			break;
		reached = k;
		if (!strcmp(stop, PHASES[k]))
			break;
	}
	printf("{\"id\":");
	json_write_string(stdout, json_string(json_get(req, "id")));
	printf(",\"result\":");
	write_result(&ld, reached);
	printf("}\n");
out:
	free(ld.buf);
	free(ld.sh);
	free(ld.init);
	free(ld.offset);
	free(ld.core.mem);
	free(ld.init_r.mem);
	for (size_t k = 0; k < ld.n_undef; k++)
		free(ld.undef_names[k]);
	free(ld.undef_names);
	free(ld.undef_values);
	free_symbols(&over);
	return problem;
}

/* ---- the protocol --------------------------------------------------------------------- */
static const char START[] =
	"{\"protocol\":1,"
	"\"implementation\":{\"name\":\"koc-loader\",\"version\":\"0.1\",\"language\":\"C\","
	"\"homepage\":\"\",\"description\":\"koconform's example loader in C (examples/c-loader)\"},"
	"\"capabilities\":{\"arches\":[\"x86_64\"],"
	"\"produces\":[\"status\",\"errno\",\"phase\",\"layout\",\"regions\",\"symbols\",\"sections\"],"
	"\"last_phase\":\"relocate\","
	"\"relocations\":{\"x86_64\":[\"R_X86_64_NONE\",\"R_X86_64_64\",\"R_X86_64_PC32\",\"R_X86_64_PLT32\","
	"\"R_X86_64_32\",\"R_X86_64_32S\",\"R_X86_64_PC64\"]}}}";

static void answer_error(const char *id, const char *message)
{
	printf("{\"id\":");
	json_write_string(stdout, id ? id : "?");
	printf(",\"errored\":");
	json_write_string(stdout, message);
	printf("}\n");
}

static const char *environment(const struct json *req)
{
	const struct json *symbols = json_get(req, "symbols");
	const char *id = json_string(json_get(req, "id"));
	struct symtable t = { 0 };
	if (!symbols || symbols->type != JSON_OBJECT || !id)
		return "environment request without id or symbols";
	if (read_symbols(symbols, &t) || !(t.id = strdup(id))) {
		free_symbols(&t);
		return "cannot read the environment's symbols";
	}
	struct symtable *more = realloc(environments, (n_environments + 1) * sizeof(*more));
	if (!more) {
		free_symbols(&t);
		return "out of memory";
	}
	environments = more;
	environments[n_environments++] = t;
	printf("{\"id\":");
	json_write_string(stdout, id);
	printf(",\"ok\":true}\n");
	return NULL;
}

static const struct symtable *find_environment(const char *id)
{
	for (size_t i = 0; id && i < n_environments; i++)
		if (!strcmp(environments[i].id, id))
			return &environments[i];
	return NULL;
}

int main(void)
{
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, stdin) > 0) {
		const char *error = NULL, *problem = NULL;
		struct json *req = json_parse(line, &error);
		const char *cmd = json_string(json_get(req, "cmd"));
		const char *id = json_string(json_get(req, "id"));
		if (!req || !cmd || (strcmp(cmd, "start") && strcmp(cmd, "stop") && !id)) {
			fprintf(stderr, "koc_loader: not a request (%s): %.80s\n", error ? error : "no cmd", line);
			json_free(req);
			return 2;
		}
		if (!strcmp(cmd, "start")) {
			puts(START);
		} else if (!strcmp(cmd, "environment")) {
			problem = environment(req);
		} else if (!strcmp(cmd, "load")) {
			const struct symtable *base = find_environment(json_string(json_get(json_get(req, "environment"), "base")));
			problem = base ? load(req, base) : "load names an environment that was not declared";
		} else if (!strcmp(cmd, "stop")) {
			json_free(req);
			break;
		} else {
			problem = "unknown command";
		}
		if (problem) {
			fprintf(stderr, "koc_loader: %s: %s\n", id ? id : cmd, problem);
			answer_error(id, problem);
		}
		fflush(stdout);
		json_free(req);
	}
	free(line);
	for (size_t i = 0; i < n_environments; i++)
		free_symbols(&environments[i]);
	free(environments);
	return 0;
}
