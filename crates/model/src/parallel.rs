//! Work over many independent items on every core, results in input order.
//! Only large inputs are split: threads cost more than small work.

use std::cell::Cell;
use std::sync::Mutex;

thread_local! {
    /// Set in worker threads: work they start runs in order on them, so
    /// nested splits (a `List` inside a large file) never multiply threads.
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// How many threads large inputs are split among: the cores, at most eight
/// (past that, merging the parts costs more than reading them).
pub(crate) fn threads() -> usize {
    if IN_WORKER.with(Cell::get) {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Worker threads get the main thread's stack: the parsers recurse once per
/// nesting level of a document, and Rust's default 2 MiB is not enough for
/// what the main thread reads.
const WORKER_STACK: usize = 8 << 20;

/// `f` of every item, in input order; on up to [`threads`] threads when
/// there are at least `min_items` items. If the system refuses a thread,
/// that share is done on the calling thread; a panic in a worker is
/// re-raised here, as if the work had run in order.
pub(crate) fn map<T: Send, R: Send>(
    items: Vec<T>,
    min_items: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let threads = threads();
    if threads < 2 || items.len() < min_items.max(2) {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let mut shares: Vec<Mutex<Option<Vec<T>>>> = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        let tail = rest.split_off(per_thread.min(rest.len()));
        shares.push(Mutex::new(Some(rest)));
        rest = tail;
    }
    let take = |share: &Mutex<Option<Vec<T>>>| -> Vec<T> {
        share
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .unwrap_or_default()
    };
    let (f, take) = (&f, &take);
    std::thread::scope(|scope| {
        let running: Vec<_> = shares
            .iter()
            .map(|share| {
                std::thread::Builder::new()
                    .stack_size(WORKER_STACK)
                    .spawn_scoped(scope, move || {
                        IN_WORKER.with(|w| w.set(true));
                        take(share).into_iter().map(f).collect::<Vec<R>>()
                    })
                    .ok()
            })
            .collect();
        let mut out = Vec::new();
        for (thread, share) in running.into_iter().zip(&shares) {
            match thread.map(|t| t.join()) {
                Some(Ok(part)) => out.extend(part),
                Some(Err(panic)) => std::panic::resume_unwind(panic),
                // No thread: the share is still there, done here.
                None => out.extend(take(share).into_iter().map(f)),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_input_order() {
        let items: Vec<usize> = (0..10_000).collect();
        assert_eq!(
            super::map(items.clone(), 100, |i| i * 2),
            items.iter().map(|i| i * 2).collect::<Vec<_>>()
        );
        assert_eq!(super::map(vec![0, 1, 2], 100, |i| i + 1), vec![1, 2, 3]);
    }

    #[test]
    fn nested_work_runs_on_the_worker() {
        let outer: Vec<usize> = (0..64).collect();
        let sums = super::map(outer, 2, |i| {
            assert_eq!(super::threads(), 1, "work inside a worker stays on it");
            super::map((0..100).collect::<Vec<usize>>(), 2, |j| i + j)
                .into_iter()
                .sum::<usize>()
        });
        assert_eq!(sums[1], (0..100).map(|j| 1 + j).sum::<usize>());
    }

    #[test]
    fn a_panic_in_a_worker_reaches_the_caller() {
        let items: Vec<usize> = (0..1000).collect();
        let result = std::panic::catch_unwind(|| {
            super::map(items, 2, |i| {
                assert!(i != 999, "boom");
                i
            })
        });
        assert!(result.is_err());
    }
}
