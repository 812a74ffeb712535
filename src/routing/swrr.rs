//! Smooth weighted round-robin (the NGINX algorithm), precomputed into a table whose
//! period is the sum of the reduced weights, so selection is one atomic add and an index.

/// The SWRR sequence for `weights`: entry k is the index chosen at step k. Weights are
/// reduced by their gcd first; zero weights never appear. Empty when all weights are zero.
pub fn sequence(weights: &[u32]) -> Vec<u32> {
    let divisor = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
    if divisor == 0 {
        return Vec::new();
    }
    let reduced: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = reduced.iter().sum();
    let mut current = vec![0i64; reduced.len()];
    let mut table = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..reduced.len() {
            current[i] += reduced[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        table.push(best as u32);
    }
    table
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in table {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn seventy_thirty_gives_seven_three_in_every_window_of_ten() {
        let table = sequence(&[70, 30]);
        assert_eq!(table.len(), 10, "weights reduce to 7:3");
        for start in 0..table.len() {
            let window: Vec<u32> = (0..10).map(|k| table[(start + k) % table.len()]).collect();
            assert_eq!(counts(&window, 2), vec![7, 3], "window from {start}");
        }
    }

    #[test]
    fn the_sequence_is_smooth_not_bursty() {
        // NGINX's example: weights 5,1,1 give a,a,b,a,c,a,a.
        assert_eq!(sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        // The lighter site never waits more than its share for a turn.
        let table = sequence(&[9, 1]);
        assert_eq!(counts(&table, 2), vec![9, 1]);
    }

    #[test]
    fn zero_weights_are_never_chosen() {
        let table = sequence(&[0, 3, 0, 2]);
        assert_eq!(counts(&table, 4), vec![0, 3, 0, 2]);
        assert!(sequence(&[0, 0]).is_empty());
        assert!(sequence(&[]).is_empty());
    }

    #[test]
    fn exact_counts_over_a_period() {
        let table = sequence(&[50, 30, 20]);
        assert_eq!(counts(&table, 3), vec![5, 3, 2]);
        let table = sequence(&[10_000, 9_999]);
        assert_eq!(counts(&table, 2), vec![10_000, 9_999]);
    }
}
