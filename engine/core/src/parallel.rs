//! Splitting batch work across threads (scoped, in order, first error wins).

use crate::error::Result;

/// Split `items` into `threads` (≥ 1) contiguous chunks, run `work` on each (the first on the
/// calling thread) and concatenate the results in order. On error, the error of the first
/// failing chunk (in order) is returned; `work` must itself stop at its first error.
pub(crate) fn map_chunks<T, R, F>(items: &[T], threads: usize, work: F) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&[T]) -> Result<Vec<R>> + Sync,
{
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return work(items);
    }
    let chunk_len = items.len().div_ceil(threads);
    let mut chunks = items.chunks(chunk_len);
    let first = chunks.next().unwrap_or_default();
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks.map(|chunk| s.spawn(move || work(chunk))).collect();
        let mut out = work(first)?;
        out.reserve(items.len() - out.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out)
    })
}

/// Items per piece of work handed to a thread by [`for_each_chunk`].
const PIECE: usize = 32;

/// Run `work` on matching pieces of `items` and `outs` (same length) on `threads` (≥ 1)
/// threads (the calling thread is one). Threads take the next piece as they finish one, so a
/// thread that the OS pauses does not hold the others up (with a fixed split, the whole batch
/// waits for the slowest share). On error, the error of the first failing piece (in order)
/// is returned; `work` must itself stop at its first error.
pub(crate) fn for_each_chunk<T, U, F>(
    items: &[T],
    outs: &mut [U],
    threads: usize,
    work: F,
) -> Result<()>
where
    T: Sync,
    U: Send,
    F: Fn(&[T], &mut [U]) -> Result<()> + Sync,
{
    debug_assert_eq!(items.len(), outs.len());
    let threads = threads.clamp(1, items.len().div_ceil(PIECE).max(1));
    if threads == 1 {
        return work(items, outs);
    }
    let pieces = std::sync::Mutex::new(items.chunks(PIECE).zip(outs.chunks_mut(PIECE)).enumerate());
    let first_error: std::sync::Mutex<Option<(usize, crate::error::Error)>> =
        std::sync::Mutex::new(None);
    let run = || loop {
        let next = pieces.lock().map_or(None, |mut p| p.next());
        let Some((k, (items, outs))) = next else {
            break;
        };
        if let Err(e) = work(items, outs) {
            if let Ok(mut first) = first_error.lock() {
                if first.as_ref().is_none_or(|(j, _)| k < *j) {
                    *first = Some((k, e));
                }
            }
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(run)).collect();
        run();
        for handle in handles {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    match first_error.into_inner() {
        Ok(Some((_, e))) => Err(e),
        _ => Ok(()),
    }
}
