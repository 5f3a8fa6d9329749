//! Multi-objective building blocks (all objectives minimised): dominance,
//! fast non-dominated sorting and crowding distance (Deb et al., 2002), and
//! the 2-D hypervolume.

/// `a` dominates `b`: no worse in every objective, better in one.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        if x < y {
            better = true;
        }
    }
    better
}

/// Fronts of indices into `objs`: front 0 is the non-dominated set.
pub fn non_dominated_sort(objs: &[Vec<f64>]) -> Vec<Vec<usize>> {
    let n = objs.len();
    let mut dominated_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut count = vec![0usize; n];
    let mut fronts = vec![Vec::new()];
    for p in 0..n {
        for q in 0..n {
            if p == q {
                continue;
            }
            if dominates(&objs[p], &objs[q]) {
                dominated_by[p].push(q);
            } else if dominates(&objs[q], &objs[p]) {
                count[p] += 1;
            }
        }
        if count[p] == 0 {
            fronts[0].push(p);
        }
    }
    let mut i = 0;
    while !fronts[i].is_empty() {
        let mut next = Vec::new();
        for &p in &fronts[i] {
            for &q in &dominated_by[p] {
                count[q] -= 1;
                if count[q] == 0 {
                    next.push(q);
                }
            }
        }
        next.sort_unstable();
        fronts.push(next);
        i += 1;
    }
    fronts.pop();
    fronts
}

/// Crowding distance of each member of `front` (same order).
pub fn crowding_distance(front: &[usize], objs: &[Vec<f64>]) -> Vec<f64> {
    let n = front.len();
    let mut d = vec![0.0f64; n];
    if n == 0 {
        return d;
    }
    let m = objs[front[0]].len();
    #[allow(clippy::needless_range_loop)] // k indexes every member's objectives
    for k in 0..m {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            objs[front[a]][k]
                .total_cmp(&objs[front[b]][k])
                .then(a.cmp(&b))
        });
        let lo = objs[front[order[0]]][k];
        let hi = objs[front[order[n - 1]]][k];
        d[order[0]] = f64::INFINITY;
        d[order[n - 1]] = f64::INFINITY;
        if hi > lo {
            for w in 1..n.saturating_sub(1) {
                d[order[w]] +=
                    (objs[front[order[w + 1]]][k] - objs[front[order[w - 1]]][k]) / (hi - lo);
            }
        }
    }
    d
}

/// Pick `n` survivors from `objs` by rank, then crowding distance (ties by index).
pub fn select(objs: &[Vec<f64>], n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n);
    for front in non_dominated_sort(objs) {
        if out.len() + front.len() <= n {
            out.extend_from_slice(&front);
        } else {
            let d = crowding_distance(&front, objs);
            let mut order: Vec<usize> = (0..front.len()).collect();
            order.sort_by(|&a, &b| d[b].total_cmp(&d[a]).then(front[a].cmp(&front[b])));
            out.extend(order.into_iter().take(n - out.len()).map(|i| front[i]));
        }
        if out.len() == n {
            break;
        }
    }
    out
}

/// Hypervolume of 2-D points (minimised) against `reference`: the area they
/// dominate inside the box below the reference point.
pub fn hypervolume_2d(points: &[[f64; 2]], reference: [f64; 2]) -> f64 {
    let mut pts: Vec<[f64; 2]> = points
        .iter()
        .copied()
        .filter(|p| p[0] < reference[0] && p[1] < reference[1])
        .collect();
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    let mut area = 0.0;
    let mut best_y = reference[1];
    for p in pts {
        if p[1] < best_y {
            area += (reference[0] - p[0]) * (best_y - p[1]);
            best_y = p[1];
        }
    }
    area
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_and_crowding() {
        let objs = vec![
            vec![1.0, 5.0],
            vec![2.0, 3.0],
            vec![3.0, 4.0],
            vec![4.0, 1.0],
            vec![5.0, 5.0],
        ];
        let f = non_dominated_sort(&objs);
        assert_eq!(f, vec![vec![0, 1, 3], vec![2], vec![4]]);
        let d = crowding_distance(&f[0], &objs);
        assert!(d[0].is_infinite() && d[2].is_infinite() && d[1].is_finite());
        assert_eq!(select(&objs, 4), vec![0, 1, 3, 2]);
    }

    #[test]
    fn hypervolume_of_simple_sets() {
        assert_eq!(hypervolume_2d(&[[0.0, 0.0]], [1.0, 1.0]), 1.0);
        assert_eq!(hypervolume_2d(&[[0.5, 0.0], [0.0, 0.5]], [1.0, 1.0]), 0.75);
        // Dominated and outside points add nothing.
        assert_eq!(
            hypervolume_2d(
                &[[0.5, 0.0], [0.0, 0.5], [0.6, 0.6], [2.0, 0.0]],
                [1.0, 1.0]
            ),
            0.75
        );
    }
}
