//! Async clean-up from `Drop`, which runs outside async. The test crates
//! that drop databases share this file by path.

/// Runs the future `job` makes to completion on a private current-thread
/// runtime, on a thread of its own, and waits for it.
pub fn on_own_runtime<F>(job: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the clean-up");
        rt.block_on(job());
    })
    .join();
}
