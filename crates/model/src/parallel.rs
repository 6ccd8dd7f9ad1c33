//! Work over many independent items on every core, results in input order.
//! Only large inputs are split: threads cost more than small work.

/// `f` of every item, in order; computed on up to eight threads when there
/// are at least `min_items` items.
pub(crate) fn map<T: Sync, R: Send>(
    items: &[T],
    min_items: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads < 2 || items.len() < min_items.max(2) {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let running: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for (thread, chunk) in running
            .into_iter()
            .zip(items.chunks(items.len().div_ceil(threads)))
        {
            // A thread that panicked (it should not) has its share done here.
            match thread.join() {
                Ok(part) => out.extend(part),
                Err(_) => out.extend(chunk.iter().map(f)),
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
            super::map(&items, 100, |i| i * 2),
            items.iter().map(|i| i * 2).collect::<Vec<_>>()
        );
        assert_eq!(super::map(&items[..3], 100, |i| i + 1), vec![1, 2, 3]);
    }
}
