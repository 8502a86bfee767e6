/*
 * LD_PRELOAD shim that lets Debian's user-mode-linux 6.1 run on hosts whose
 * XSAVE area is larger than that kernel knows (CPUs with AVX-512 or AMX).
 *
 * UML saves and restores each guest task's FPU state with
 * PTRACE_GETREGSET/PTRACE_SETREGSET(NT_X86_XSTATE) on a buffer sized for the
 * features it knows (832 bytes). A current host kernel refuses a SETREGSET
 * whose buffer is smaller than the whole XSAVE area (EFAULT), and UML panics
 * at boot with "ptrace set fp regs failed, errno = 14".
 *
 * The shim gives every UML register buffer a full-size shadow. GETREGSET
 * fills the shadow from the host and copies UML's prefix out; SETREGSET copies
 * UML's prefix into the shadow and hands the host the full area. Because the
 * shadow is keyed by UML's buffer address (one per guest task), each task
 * keeps its own upper register state. On a host whose XSAVE area fits, the
 * calls pass through unchanged in effect.
 *
 * Built at run time by tests/vm/uml_run.py (gcc -shared -fPIC).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NT_X86_XSTATE_NOTE 0x202
#define SHADOW_SIZE (64 * 1024)
#define TABLE_SIZE 16384

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

struct shadow {
	void *owner;          /* UML's buffer address; NULL = free slot */
	unsigned char *area;  /* full-size XSAVE copy */
};

static ptrace_fn host_ptrace;
static size_t host_xstate_size;
static struct shadow shadows[TABLE_SIZE];
static unsigned char scratch[SHADOW_SIZE];

/* Open addressing on the buffer address; slots are never freed (a guest has
 * a bounded number of tasks, and a reused address simply reuses its slot). */
static unsigned char *shadow_for(void *owner)
{
	size_t start = (((uintptr_t)owner) >> 4) * 0x9E3779B97F4A7C15ull % TABLE_SIZE;
	for (size_t probe = 0; probe < TABLE_SIZE; probe++) {
		struct shadow *s = &shadows[(start + probe) % TABLE_SIZE];
		if (s->owner == owner)
			return s->area;
		if (s->owner == NULL) {
			s->area = calloc(1, SHADOW_SIZE);
			if (s->area == NULL)
				return NULL;
			s->owner = owner;
			return s->area;
		}
	}
	return NULL;
}

static long read_host_xstate(pid_t pid, unsigned char *area)
{
	struct iovec full = { area, SHADOW_SIZE };
	long rc = host_ptrace(PTRACE_GETREGSET, pid, (void *)(uintptr_t)NT_X86_XSTATE_NOTE, &full);
	if (rc == 0)
		host_xstate_size = full.iov_len;
	return rc;
}

long ptrace(enum __ptrace_request request, ...)
{
	va_list args;
	va_start(args, request);
	pid_t pid = va_arg(args, pid_t);
	void *addr = va_arg(args, void *);
	void *data = va_arg(args, void *);
	va_end(args);

	if (host_ptrace == NULL)
		host_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");

	int is_xstate = (uintptr_t)addr == NT_X86_XSTATE_NOTE && data != NULL;
	if (!is_xstate || (request != PTRACE_GETREGSET && request != PTRACE_SETREGSET))
		return host_ptrace(request, pid, addr, data);

	struct iovec *uml = data;
	unsigned char *area = shadow_for(uml->iov_base);
	int tracked = area != NULL;
	if (!tracked)
		area = scratch;

	if (request == PTRACE_GETREGSET) {
		long rc = read_host_xstate(pid, area);
		if (rc != 0)
			return rc;
		size_t n = uml->iov_len < host_xstate_size ? uml->iov_len : host_xstate_size;
		memcpy(uml->iov_base, area, n);
		uml->iov_len = n;
		return 0;
	}

	/* SETREGSET: an untracked buffer, or the first call before any GET, has
	 * no shadow content yet; start from the task's current host state. */
	if (!tracked || host_xstate_size == 0) {
		long rc = read_host_xstate(pid, area);
		if (rc != 0)
			return rc;
	}
	size_t n = uml->iov_len < host_xstate_size ? uml->iov_len : host_xstate_size;
	memcpy(area, uml->iov_base, n);
	struct iovec full = { area, host_xstate_size };
	return host_ptrace(PTRACE_SETREGSET, pid, addr, &full);
}
