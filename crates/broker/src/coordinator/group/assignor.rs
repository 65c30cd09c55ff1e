//! KIP-848 server-side assignors: `uniform` (balanced and sticky: members keep what they had while the counts
//! allow) and `range` (per topic, contiguous ranges over the members sorted by id, as Kafka's RangeAssignor).
//! Both take the members' subscriptions and the subscribed topics' partition counts, and return a target
//! assignment per member.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// topic id → partitions.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

pub struct MemberSpec<'a> {
    pub member_id: &'a str,
    /// Topic ids the member subscribes to (names resolved against the metadata image).
    pub topics: BTreeSet<Uuid>,
    /// The member's current target, for stickiness.
    pub current: Option<&'a Assignment>,
}

pub const UNIFORM: &str = "uniform";
pub const RANGE: &str = "range";

pub fn assign(
    assignor: &str,
    members: &[MemberSpec],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    match assignor {
        RANGE => range(members, partitions),
        _ => uniform(members, partitions),
    }
}

fn range(members: &[MemberSpec], partitions: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> =
        members.iter().map(|m| (m.member_id.to_string(), Assignment::new())).collect();
    for (&topic, &count) in partitions {
        let mut subscribers: Vec<&str> =
            members.iter().filter(|m| m.topics.contains(&topic)).map(|m| m.member_id).collect();
        subscribers.sort();
        if subscribers.is_empty() {
            continue;
        }
        let n = subscribers.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subscribers.iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            if take > 0 {
                out.entry(m.to_string()).or_default().entry(topic).or_default().extend(next..next + take);
            }
            next += take;
        }
    }
    out
}

fn uniform(members: &[MemberSpec], partitions: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    let mut sorted: Vec<&MemberSpec> = members.iter().collect();
    sorted.sort_by_key(|m| m.member_id);
    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    let mut counts = vec![0usize; sorted.len()];
    // 1. Stickiness: keep every still valid partition of the current target.
    for (i, m) in sorted.iter().enumerate() {
        for (topic, ps) in m.current.into_iter().flatten() {
            let Some(&count) = partitions.get(topic) else { continue };
            if !m.topics.contains(topic) {
                continue;
            }
            for &p in ps {
                if p < count && !owner.contains_key(&(*topic, p)) {
                    owner.insert((*topic, p), i);
                    counts[i] += 1;
                }
            }
        }
    }
    // 2. Unowned partitions go to the least loaded eligible member.
    for (&topic, &count) in partitions {
        for p in 0..count {
            if owner.contains_key(&(topic, p)) {
                continue;
            }
            if let Some(i) =
                (0..sorted.len()).filter(|&i| sorted[i].topics.contains(&topic)).min_by_key(|&i| (counts[i], i))
            {
                owner.insert((topic, p), i);
                counts[i] += 1;
            }
        }
    }
    // 3. Balance: move partitions from a member to an eligible one holding at least two fewer, until none can.
    loop {
        let mut moved = false;
        let keys: Vec<(Uuid, i32)> = owner.keys().rev().cloned().collect();
        for key in keys {
            let from = owner[&key];
            if let Some(to) = (0..sorted.len())
                .filter(|&i| i != from && sorted[i].topics.contains(&key.0) && counts[i] + 2 <= counts[from])
                .min_by_key(|&i| (counts[i], i))
            {
                owner.insert(key, to);
                counts[from] -= 1;
                counts[to] += 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let mut out: BTreeMap<String, Assignment> =
        sorted.iter().map(|m| (m.member_id.to_string(), Assignment::new())).collect();
    for ((topic, p), i) in owner {
        out.entry(sorted[i].member_id.to_string()).or_default().entry(topic).or_default().insert(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(id: &'a str, topics: &[Uuid], current: Option<&'a Assignment>) -> MemberSpec<'a> {
        MemberSpec { member_id: id, topics: topics.iter().cloned().collect(), current }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(|s| s.len()).sum()
    }

    #[test]
    fn uniform_is_balanced_and_sticky() {
        let t = Uuid::new_v4();
        let parts = BTreeMap::from([(t, 6)]);
        let a = assign(UNIFORM, &[spec("a", &[t], None), spec("b", &[t], None), spec("c", &[t], None)], &parts);
        assert!(a.values().all(|x| count(x) == 2));
        // c leaves: a and b keep theirs and split c's.
        let (aa, bb) = (a["a"].clone(), a["b"].clone());
        let b2 = assign(UNIFORM, &[spec("a", &[t], Some(&aa)), spec("b", &[t], Some(&bb))], &parts);
        assert!(aa[&t].is_subset(&b2["a"][&t]) && bb[&t].is_subset(&b2["b"][&t]));
        assert_eq!(count(&b2["a"]) + count(&b2["b"]), 6);
        assert_eq!(count(&b2["a"]), 3);
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let t = Uuid::new_v4();
        let parts = BTreeMap::from([(t, 5)]);
        let a = assign(RANGE, &[spec("b", &[t], None), spec("a", &[t], None)], &parts);
        assert_eq!(a["a"][&t], BTreeSet::from([0, 1, 2]));
        assert_eq!(a["b"][&t], BTreeSet::from([3, 4]));
    }

    #[test]
    fn only_subscribers_get_a_topic() {
        let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
        let parts = BTreeMap::from([(t1, 2), (t2, 2)]);
        let a = assign(UNIFORM, &[spec("a", &[t1], None), spec("b", &[t1, t2], None)], &parts);
        assert!(!a["a"].contains_key(&t2));
        assert_eq!(a["b"][&t2].len(), 2);
    }
}
