//! Dependency graphs at submit time, as pure functions: find a cycle (and
//! name it), and work out each new task's first state from its dependencies —
//! ready, blocked until N dependencies succeed, or cancelled because one
//! already died or was cancelled.

/// How a dependency stands when a task is submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upstream {
    /// Succeeded: nothing to wait for.
    Succeeded,
    /// Not finished yet (queued, running, blocked).
    Pending,
    /// Dead or cancelled: the dependent can never run.
    Failed,
}

/// A new task's first state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Every dependency has succeeded (or there are none).
    Ready,
    /// Waiting for this many dependencies.
    Blocked(u32),
    /// A dependency died or was cancelled.
    CancelledUpstream,
}

/// A dependency of a new task: another new task (by index) or an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dependency {
    /// The new task at this index.
    New(usize),
    /// An existing task, as it stands.
    Existing(Upstream),
}

/// Finds a cycle among new tasks, where `deps[i]` lists the new tasks task `i`
/// depends on. Returns the cycle as indices, first and last the same
/// (`a → b → c → a`), or `None` for a DAG.
pub(crate) fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; deps.len()];
    for root in 0..deps.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // Iterative depth-first search; `path` is the current chain of tasks.
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match marks.get(dep).copied() {
                    Some(Mark::New) => {
                        marks[dep] = Mark::OnPath;
                        path.push((dep, 0));
                    }
                    Some(Mark::OnPath) => {
                        let start = path.iter().position(|(task, _)| *task == dep).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[start..].iter().map(|(task, _)| *task).collect();
                        cycle.push(dep);
                        return Some(cycle);
                    }
                    Some(Mark::Done) | None => {}
                }
            } else {
                marks[node] = Mark::Done;
                path.pop();
            }
        }
    }
    None
}

/// Works out each new task's first state; `deps` must be acyclic (checked with [`find_cycle`]).
pub(crate) fn plan(deps: &[Vec<Dependency>]) -> Vec<Start> {
    let mut starts: Vec<Option<Start>> = vec![None; deps.len()];
    for task in 0..deps.len() {
        resolve(task, deps, &mut starts);
    }
    starts.into_iter().map(|start| start.unwrap_or(Start::Ready)).collect()
}

fn resolve(task: usize, deps: &[Vec<Dependency>], starts: &mut [Option<Start>]) -> Start {
    if let Some(start) = starts[task] {
        return start;
    }
    let mut waiting = 0_u32;
    let mut failed = false;
    for dependency in &deps[task] {
        let upstream = match *dependency {
            Dependency::Existing(upstream) => upstream,
            Dependency::New(index) => match resolve(index, deps, starts) {
                Start::CancelledUpstream => Upstream::Failed,
                Start::Ready | Start::Blocked(_) => Upstream::Pending,
            },
        };
        match upstream {
            Upstream::Succeeded => {}
            Upstream::Pending => waiting += 1,
            Upstream::Failed => failed = true,
        }
    }
    let start = if failed {
        Start::CancelledUpstream
    } else if waiting == 0 {
        Start::Ready
    } else {
        Start::Blocked(waiting)
    };
    starts[task] = Some(start);
    start
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_cycle_is_found_and_named_in_order() {
        // a(0) → b(1) → c(2) → a(0); d(3) depends on a.
        let deps = vec![vec![1], vec![2], vec![0], vec![0]];
        let cycle = find_cycle(&deps).unwrap();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        for pair in cycle.windows(2) {
            assert!(deps[pair[0]].contains(&pair[1]), "{cycle:?}");
        }
    }

    #[test]
    fn a_self_dependency_is_a_cycle() {
        assert_eq!(find_cycle(&[vec![0]]), Some(vec![0, 0]));
    }

    #[test]
    fn a_diamond_is_not_a_cycle() {
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0], vec![1, 2]]), None);
    }

    #[test]
    fn first_states_follow_the_dependencies() {
        use Dependency::{Existing, New};
        let deps = vec![
            vec![],                                            // 0: ready
            vec![New(0)],                                      // 1: waits for 0
            vec![Existing(Upstream::Succeeded)],               // 2: ready
            vec![Existing(Upstream::Failed)],                  // 3: cancelled
            vec![New(3), New(0)],                              // 4: cancelled through 3
            vec![Existing(Upstream::Pending), New(1), New(2)], // 5: waits for 2
        ];
        assert_eq!(
            plan(&deps),
            [
                Start::Ready,
                Start::Blocked(1),
                Start::Ready,
                Start::CancelledUpstream,
                Start::CancelledUpstream,
                Start::Blocked(3)
            ]
        );
    }

    /// A random DAG: task i may depend only on tasks before it.
    fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1_usize..40).prop_flat_map(|n| {
            (0..n).map(|i| proptest::collection::vec(0..i.max(1), 0..4.min(i + 1))).collect::<Vec<_>>().prop_map(
                |mut deps| {
                    for (i, list) in deps.iter_mut().enumerate() {
                        list.retain(|dep| *dep < i);
                        list.sort_unstable();
                        list.dedup();
                    }
                    deps
                },
            )
        })
    }

    proptest! {
        #[test]
        fn dags_have_no_cycle(deps in dag()) {
            prop_assert_eq!(find_cycle(&deps), None);
        }

        #[test]
        fn a_back_edge_makes_a_cycle_that_is_reported_edge_by_edge(deps in dag(), from in 0_usize..40, to in 0_usize..40) {
            let n = deps.len();
            let (low, high) = (from % n, to % n);
            let mut deps = deps;
            // Make `low` depend on `high` where `high` already reaches `low` (or is it).
            let reaches = {
                let mut seen = vec![false; n];
                let mut stack = vec![high];
                while let Some(task) = stack.pop() {
                    if !std::mem::replace(&mut seen[task], true) {
                        stack.extend(deps[task].iter().copied());
                    }
                }
                seen[low]
            };
            deps[low].push(high);
            let cycle = find_cycle(&deps);
            prop_assert_eq!(cycle.is_some(), reaches);
            if let Some(cycle) = cycle {
                prop_assert_eq!(cycle.first(), cycle.last());
                for pair in cycle.windows(2) {
                    prop_assert!(deps[pair[0]].contains(&pair[1]));
                }
            }
        }

        #[test]
        fn a_task_starts_ready_exactly_when_nothing_it_depends_on_is_unfinished(
            deps in dag(), existing in proptest::collection::vec(0_u8..3, 40),
        ) {
            // Every task also depends on one existing task of a random standing.
            let standing = |i: usize| match existing[i % existing.len()] {
                0 => Upstream::Succeeded,
                1 => Upstream::Pending,
                _ => Upstream::Failed,
            };
            let full: Vec<Vec<Dependency>> = deps
                .iter()
                .enumerate()
                .map(|(i, list)| list.iter().map(|d| Dependency::New(*d)).chain([Dependency::Existing(standing(i))]).collect())
                .collect();
            let starts = plan(&full);
            for (i, start) in starts.iter().enumerate() {
                let any_failed = standing(i) == Upstream::Failed
                    || deps[i].iter().any(|d| starts[*d] == Start::CancelledUpstream);
                let pending = u32::from(standing(i) == Upstream::Pending) + u32::try_from(deps[i].len()).unwrap();
                let expected = if any_failed {
                    Start::CancelledUpstream
                } else if pending == 0 {
                    Start::Ready
                } else {
                    Start::Blocked(pending)
                };
                prop_assert_eq!(*start, expected, "task {}", i);
            }
        }
    }
}
