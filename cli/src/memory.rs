//! The process's allocator: jemalloc, with background threads that give freed memory back.
//!
//! Under load the server allocates request buffers, rows and cached aggregates by the hundred
//! megabytes; glibc's allocator keeps most of that in its per-thread arenas once freed, so the
//! resident size stayed at its peak long after the load had stopped (issue 10). jemalloc's
//! background threads return dirty pages to the system after its decay time (10 s by default)
//! without any request having to do it, so an idle server goes back down.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Starts jemalloc's background purging; a failure only costs memory, so it is logged, not fatal.
pub fn give_back_freed_memory() {
    if let Err(err) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %err, "jemalloc's background threads did not start: freed memory is kept until reused");
    }
}

/// Sets `stay_allocator_allocated_bytes` (memory the program holds) and
/// `stay_allocator_resident_bytes` (what the allocator keeps in RAM for it) from jemalloc's
/// statistics, so a resident size that stays high can be told apart: live data, or freed memory
/// not yet given back. Memory that C libraries (SQLite's page cache) take from the system's
/// allocator is in neither.
pub fn record_allocator_gauges() {
    // The statistics are a snapshot taken when the epoch advances.
    if tikv_jemalloc_ctl::epoch::advance().is_err() {
        return;
    }
    if let Ok(bytes) = tikv_jemalloc_ctl::stats::allocated::read() {
        metrics::gauge!("stay_allocator_allocated_bytes").set(bytes as f64);
    }
    if let Ok(bytes) = tikv_jemalloc_ctl::stats::resident::read() {
        metrics::gauge!("stay_allocator_resident_bytes").set(bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn background_purging_is_on_once_asked_for() {
        super::give_back_freed_memory();
        assert_eq!(tikv_jemalloc_ctl::background_thread::read().ok(), Some(true));
    }

    #[test]
    fn the_allocator_counts_what_the_program_holds() {
        let held = vec![1u8; 8 << 20];
        tikv_jemalloc_ctl::epoch::advance().expect("epoch");
        let allocated = tikv_jemalloc_ctl::stats::allocated::read().expect("allocated");
        assert!(allocated >= held.len(), "{allocated} bytes allocated while 8 MiB are held");
        drop(held);
    }
}
