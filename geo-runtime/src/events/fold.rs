//! The cursor's pure cores, unit-tested without a database: the gaps a batch leaves in the id
//! sequence, and what a batch's events do to each record once folded in order.

use std::collections::BTreeMap;

use super::EventName;

/// Gaps wider than this are not tracked id by id (a sequence jump, not a late commit; the
/// consistency pass covers them).
pub(crate) const MAX_GAP_WIDTH: i64 = 10_000;

/// The ids a batch skipped after `position`: each to track as a gap, or (too wide to track) as
/// a range `(from, to)` given up at once.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Gaps {
    pub(crate) ids: Vec<i64>,
    pub(crate) too_wide: Vec<(i64, i64)>,
}

impl Gaps {
    /// The gaps before and between `batch` (ascending event ids read after `position`).
    pub(crate) fn of(position: i64, batch: impl IntoIterator<Item = i64>) -> Self {
        let mut gaps = Gaps::default();
        let mut expected = position + 1;
        for id in batch {
            if id > expected {
                if id - expected > MAX_GAP_WIDTH {
                    gaps.too_wide.push((expected, id - 1));
                } else {
                    gaps.ids.extend(expected..id);
                }
            }
            expected = expected.max(id + 1);
        }
        gaps
    }

    /// How many ids the too-wide ranges hold.
    pub(crate) fn abandoned(&self) -> u64 {
        self.too_wide
            .iter()
            .map(|(from, to)| u64::try_from(to - from + 1).unwrap_or(u64::MAX))
            .sum()
    }
}

/// What a batch does to one model record, after folding its events in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Make sure a row exists; leave an existing one alone.
    Track,
    /// Row back to pending (created when missing).
    Reset,
    /// Remove the row.
    Remove,
    /// Deleted, then created again within the batch: the old row goes (its copies retired) and
    /// a fresh one comes, pending, recorded with no copy yet.
    Recreate,
}

impl Action {
    /// How the debug log words it.
    pub(crate) const fn describe(self) -> &'static str {
        match self {
            Action::Track => "tracked (pending when new)",
            Action::Reset => "back to pending",
            Action::Remove => "removed",
            Action::Recreate => "removed, then tracked afresh",
        }
    }
}

/// One replicable's records in a batch: the folded action and the object keys to remove.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Fold(BTreeMap<i64, (Action, Vec<String>)>);

impl Fold {
    /// Folds the next event of record `id` (`key`: the object key the event names).
    pub(crate) fn add(&mut self, id: i64, event: EventName, key: Option<String>) {
        match (self.0.get_mut(&id), event) {
            (None, EventName::Created) => {
                self.0.insert(id, (Action::Track, Vec::new()));
            }
            (None, EventName::Updated) => {
                self.0.insert(id, (Action::Reset, Vec::new()));
            }
            (None, EventName::Deleted) => {
                self.0
                    .insert(id, (Action::Remove, key.into_iter().collect()));
            }
            (Some(slot), EventName::Created | EventName::Updated) => {
                // After a delete in the same batch the record is new: its old row and every
                // copy retired on the way go (even under the key it uses again: the new version
                // is synced afresh), and a fresh row tracks it.
                slot.0 = match (slot.0, event) {
                    (Action::Remove | Action::Recreate, _) => Action::Recreate,
                    (Action::Track, EventName::Created) => Action::Track,
                    _ => Action::Reset,
                };
            }
            (Some(slot), EventName::Deleted) => {
                slot.0 = Action::Remove;
                if let Some(k) = key
                    && !slot.1.contains(&k)
                {
                    slot.1.push(k);
                }
            }
        }
    }

    /// The records, in id order.
    pub(crate) fn records(&self) -> impl Iterator<Item = (i64, Action)> + '_ {
        self.0.iter().map(|(id, (action, _))| (*id, *action))
    }

    /// The registry changes of the batch.
    pub(crate) fn changes(self) -> Changes {
        let mut c = Changes::default();
        for (id, (action, keys)) in self.0 {
            match action {
                Action::Track => c.track.push(id),
                Action::Reset => c.reset.push(id),
                Action::Remove => c.remove.push(id),
                Action::Recreate => {
                    c.remove.push(id);
                    c.track.push(id);
                }
            }
            if matches!(action, Action::Remove | Action::Recreate) || !keys.is_empty() {
                c.removals.insert(id, keys);
            }
        }
        c
    }
}

/// What a batch changes in one registry, by model id (ascending).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Rows to make sure of.
    pub(crate) track: Vec<i64>,
    /// Rows back to pending.
    pub(crate) reset: Vec<i64>,
    /// Rows to delete.
    pub(crate) remove: Vec<i64>,
    /// Copies to remove, by model id: the keys the events named (the stored key is added when
    /// the row is deleted).
    pub(crate) removals: BTreeMap<i64, Vec<String>>,
}

impl Changes {
    /// Adds the key a deleted row recorded for its copy.
    pub(crate) fn retire_stored(&mut self, id: i64, stored: Option<String>) {
        if let Some(k) = stored {
            let keys = self.removals.entry(id).or_default();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }

    /// The removals to schedule: one per key, or one without a key when none is known anywhere
    /// (the removal worker then says so).
    pub(crate) fn removal_list(&self) -> Vec<(i64, Option<String>)> {
        self.removals
            .iter()
            .flat_map(|(id, keys)| match keys.is_empty() {
                true => vec![(*id, None)],
                false => keys.iter().map(|k| (*id, Some(k.clone()))).collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventName::{Created, Deleted, Updated};

    #[test]
    fn gaps_are_the_ids_a_batch_skipped() {
        assert_eq!(Gaps::of(10, [11, 12, 13]), Gaps::default());
        assert_eq!(Gaps::of(10, [12, 15]).ids, [11, 13, 14]);
        // Out of order or repeated ids never make a gap backwards.
        assert_eq!(Gaps::of(0, [3, 2, 5]).ids, [1, 2, 4]);
        let wide = Gaps::of(0, [MAX_GAP_WIDTH + 2]);
        assert!(wide.ids.is_empty());
        assert_eq!(wide.too_wide, [(1, MAX_GAP_WIDTH + 1)]);
        assert_eq!(wide.abandoned(), MAX_GAP_WIDTH as u64 + 1);
        let edge = Gaps::of(0, [MAX_GAP_WIDTH + 1]);
        assert_eq!(edge.ids.len(), MAX_GAP_WIDTH as usize);
    }

    /// A record's event: id, name, the object key it names.
    type Ev = (i64, EventName, Option<&'static str>);

    fn fold(events: &[Ev]) -> Fold {
        let mut f = Fold::default();
        for (id, e, k) in events {
            f.add(*id, *e, k.map(str::to_owned));
        }
        f
    }

    #[test]
    fn events_of_a_record_fold_in_order() {
        let cases: [(&[Ev], Action); 7] = [
            (&[(1, Created, None)], Action::Track),
            (&[(1, Updated, None)], Action::Reset),
            (&[(1, Created, None), (1, Updated, None)], Action::Reset),
            (&[(1, Created, None), (1, Created, None)], Action::Track),
            (
                &[(1, Updated, None), (1, Deleted, Some("a"))],
                Action::Remove,
            ),
            (
                &[(1, Deleted, Some("a")), (1, Created, None)],
                Action::Recreate,
            ),
            (
                &[(1, Deleted, None), (1, Created, None), (1, Updated, None)],
                Action::Recreate,
            ),
        ];
        for (events, want) in cases {
            let got: Vec<_> = fold(events).records().collect();
            assert_eq!(got, [(1, want)], "{events:?}");
        }
    }

    #[test]
    fn changes_retire_every_key_once() {
        let mut c = fold(&[
            (1, Deleted, Some("a")),
            (1, Created, None),
            (1, Deleted, Some("b")),
            (1, Deleted, Some("a")),
            (2, Created, None),
            (3, Deleted, None),
        ])
        .changes();
        assert_eq!(
            (c.track.as_slice(), c.remove.as_slice()),
            (&[2][..], &[1, 3][..])
        );
        c.retire_stored(1, Some("c".into()));
        c.retire_stored(1, Some("a".into()));
        c.retire_stored(3, None);
        assert_eq!(
            c.removal_list(),
            [
                (1, Some("a".into())),
                (1, Some("b".into())),
                (1, Some("c".into())),
                (3, None)
            ]
        );
    }
}
