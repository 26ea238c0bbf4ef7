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

/// Split `items` and `outs` (same length) into `threads` (≥ 1) matching contiguous chunks
/// and run `work` on each pair (the first on the calling thread). On error, the error of the
/// first failing chunk (in order) is returned; `work` must itself stop at its first error.
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
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return work(items, outs);
    }
    let chunk_len = items.len().div_ceil(threads);
    let mut pairs = items.chunks(chunk_len).zip(outs.chunks_mut(chunk_len));
    let Some((first_items, first_outs)) = pairs.next() else {
        return Ok(());
    };
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> = pairs.map(|(i, o)| s.spawn(move || work(i, o))).collect();
        let first = work(first_items, first_outs);
        let mut result = first;
        for handle in handles {
            match handle.join() {
                Ok(r) => {
                    if result.is_ok() {
                        result = r;
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        result
    })
}
