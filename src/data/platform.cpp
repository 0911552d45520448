// platform.cpp: the system calls of platform.h (Linux, glibc): mappings
// grown with mremap on transparent huge pages, the sequential-read hint,
// memrchr. With platform.h, the only place of the data layer with #if.
#include "sasrec/platform.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <cstring>
#include <new>

namespace sasrec::platform {

void* map_pages(void* old, size_t old_bytes, size_t bytes) {
  void* p = old ? mremap(old, old_bytes, bytes, MREMAP_MAYMOVE)
                : mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  // The row arrays are GBs: with 4 KiB pages each costs one fault.
  madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
}

void unmap_pages(void* p, size_t bytes) { munmap(p, bytes); }

void advise_sequential(int fd) {
#ifdef POSIX_FADV_SEQUENTIAL
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#else
  (void)fd;
#endif
}

const char* find_last(const char* p, char c, size_t n) { return static_cast<const char*>(memrchr(p, c, n)); }

}  // namespace sasrec::platform
