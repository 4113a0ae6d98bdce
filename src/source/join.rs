//! Where a partition's stream really begins, checked against what the broker serves rather
//! than taken from the offset it reports.
//!
//! A consumer assigned at offset `X` is not guaranteed to be served the record at `X`:
//! Kafka serves whole batches and the client drops what lies before `X`, but a broker may
//! serve only batches that *start* at or after `X` (Tansu does), so a batch holding `X`
//! in its middle is skipped whole. And the offset it reports as a partition's end can lie
//! inside its last batch (Tansu's high watermark is that batch's first offset + 1). A
//! stream that trusted either would skip records and still claim to hold everything from
//! `X` on.
//!
//! So every read that must begin exactly at `X` is checked: it starts from one record
//! earlier, and it counts as joined once it is served a record at or before `X` (everything
//! after that comes in order), or once the consumer's position passes `X` with nothing
//! served (the offsets before it hold no record: transaction markers). A first record
//! after `X` means the broker skipped something: the read steps back further, doubling the
//! step each time, down to the partition's first offset, where nothing can be skipped any
//! more. The live source and the history reader both read this way.

/// What to do with a record served to a read that is joining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Before `X`: not wanted, but it proves what follows is contiguous. Joined.
    Confirmed,
    /// At or after `X`, and joined: pass it on (a record after `X` is a gap in the
    /// partition itself: there was no record to serve in between).
    Joined,
    /// After `X` while records before it may have been skipped: drop it, seek here.
    SeekBack(i64),
}

/// One partition's read on its way to joining at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joining {
    /// Where the read must begin.
    pub at: i64,
    /// The partition's first offset: nothing before it can be skipped.
    low: i64,
    /// Where the read is positioned now.
    seeked: i64,
}

impl Joining {
    /// A read that must begin at `at` in a partition whose first offset is `low`: where to
    /// seek first, and `None` when nothing before `at` exists (joined at once).
    pub fn new(at: i64, low: i64) -> Option<(Joining, i64)> {
        if at <= low {
            return None;
        }
        let seek = at - 1;
        Some((Joining { at, low, seeked: seek }, seek))
    }

    /// A record at `offset` was served.
    pub fn record(&mut self, offset: i64) -> Step {
        if offset < self.at {
            Step::Confirmed
        } else if offset == self.at || self.seeked <= self.low {
            Step::Joined
        } else {
            let step = (self.at - self.seeked).max(1);
            self.seeked = (self.at - 2 * step).max(self.low);
            Step::SeekBack(self.seeked)
        }
    }

    /// The consumer's position passed `at` with no record served before it: the offsets
    /// there hold none (transaction markers, compacted records).
    pub fn passed(&self, position: i64) -> bool {
        position >= self.at
    }

    /// Nothing is served where the read is: the broker holds no batch starting there or
    /// later, so the one holding `at` starts earlier. Where to seek next, or `None` when
    /// the read is at the partition's first offset already.
    pub fn starved(&mut self) -> Option<i64> {
        if self.seeked <= self.low {
            return None;
        }
        let step = (self.at - self.seeked).max(1);
        self.seeked = (self.at - 2 * step).max(self.low);
        Some(self.seeked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broker that serves only whole batches starting at or after the fetch offset:
    /// what a read at `seek` is served first.
    fn first_served(batches: &[(i64, i64)], seek: i64) -> Option<i64> {
        batches.iter().find(|(base, _)| *base >= seek).map(|(base, _)| *base)
    }

    /// Drives a read at `at` against such a broker: the first offset it passes on, and the
    /// seeks it made.
    fn join(batches: &[(i64, i64)], at: i64, low: i64) -> (Option<i64>, Vec<i64>) {
        let Some((mut joining, seek)) = Joining::new(at, low) else { return (Some(at), vec![]) };
        let mut seeks = vec![seek];
        // Where the next fetch asks from: the seek, then the end of each batch served.
        let mut fetch = seek;
        'fetching: loop {
            let Some(base) = first_served(batches, fetch) else {
                match joining.starved() {
                    Some(s) => {
                        seeks.push(s);
                        fetch = s;
                        continue;
                    }
                    None => return (None, seeks),
                }
            };
            let end = batches.iter().find(|(b, _)| *b == base).unwrap().1;
            // The client drops what lies before its fetch offset within the batch.
            for offset in base.max(fetch)..end {
                match joining.record(offset) {
                    Step::Confirmed => continue,
                    Step::Joined => return (Some(offset), seeks),
                    Step::SeekBack(s) => {
                        seeks.push(s);
                        fetch = s;
                        continue 'fetching;
                    }
                }
            }
            fetch = end;
        }
    }

    #[test]
    fn a_read_at_the_reported_end_is_confirmed_by_the_last_batch() {
        // Batches 0..10, 10..74, 74..82; the broker reports 75 as the end.
        let batches = [(0, 10), (10, 74), (74, 82)];
        assert_eq!(join(&batches, 75, 0), (Some(75), vec![74]));
    }

    #[test]
    fn a_read_inside_a_batch_steps_back_to_its_start() {
        // 78 lies inside 74..82; the broker skips to 82 from any seek after 74.
        let batches = [(0, 10), (10, 74), (74, 82), (82, 90)];
        let (first, seeks) = join(&batches, 78, 0);
        assert_eq!(first, Some(78));
        assert_eq!(seeks, [77, 76, 74]);
    }

    #[test]
    fn a_read_at_the_first_offset_needs_no_check() {
        assert!(Joining::new(5, 5).is_none());
        assert!(Joining::new(0, 0).is_none());
    }

    #[test]
    fn a_read_in_the_last_batch_when_nothing_follows_steps_back_until_served() {
        // Nothing starts at or after 79: the batch holding it is found by stepping back.
        let batches = [(0, 70), (70, 90)];
        let (first, seeks) = join(&batches, 80, 0);
        assert_eq!(first, Some(80));
        assert_eq!(seeks, [79, 78, 76, 72, 64]);
    }

    #[test]
    fn a_real_gap_is_accepted_once_the_read_reaches_the_first_offset() {
        // Offsets 3..6 hold nothing (compacted): from the first offset, 6 is what follows.
        let batches = [(0, 3), (6, 9)];
        let (first, seeks) = join(&batches, 4, 0);
        assert_eq!(first, Some(6));
        assert_eq!(seeks, [3, 2, 0]);
    }

    #[test]
    fn a_position_past_the_start_with_nothing_served_is_joined() {
        let (joining, _) = Joining::new(10, 0).unwrap();
        assert!(!joining.passed(9));
        assert!(joining.passed(10));
    }
}
