import CMalloc

/// glibc's allocator, set for a process that runs task after task.
enum Allocator {
    /// glibc gives freed heap above 128 KiB back to the kernel and takes it again for the next
    /// task, every page faulted in and zeroed anew, and gives each allocation above 128 KiB a
    /// mapping of its own, unmapped when freed. Writing the voter rolls that was 8 % of the pool
    /// processes' CPU, and 1.5 to 2 s of the million-voter chord's 13 (docs/benchmarks.md). This
    /// keeps up to 64 MiB of freed heap and serves allocations up to 16 MiB from the heap: a
    /// process holds at most what its largest task needed, plus that.
    ///
    /// In an in-process pool this sets the allocator of the whole process (an application that
    /// embeds the worker included), and glibc keeps that much freed heap per arena (per busy
    /// thread), not per process. Settings given in GLIBC_TUNABLES are replaced.
    static func keepFreedMemory() {
        #if canImport(Glibc)
            _ = mallopt(M_TRIM_THRESHOLD, 64 << 20)
            _ = mallopt(M_MMAP_THRESHOLD, 16 << 20)
        #endif
    }
}
