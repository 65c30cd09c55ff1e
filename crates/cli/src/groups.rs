//! `strom groups list|describe|delete|reset-offsets`, with kafka-consumer-groups.sh's flags and output shape.
//! Lag is the log end offset minus the committed offset, per partition.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use strom_client::group::offsets::OffsetAndMetadata;
use strom_client::offsets::{EARLIEST, LATEST};
use strom_client::{Admin, TopicPartition};

use crate::connect_args::{runtime, Bootstrap};

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups.
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// Also print each group's state and type.
        #[arg(long)]
        state: bool,
    },
    /// Per partition: committed offset, log end offset and lag, and the member that owns it.
    Describe {
        #[arg(long)]
        group: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
        /// Print the members and their assignments instead of the offsets.
        #[arg(long)]
        members: bool,
    },
    /// Delete an empty group and its committed offsets.
    Delete {
        #[arg(long)]
        group: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Change an inactive group's committed offsets.
    ResetOffsets(ResetArgs),
}

#[derive(Args)]
pub struct ResetArgs {
    #[arg(long)]
    group: String,
    #[command(flatten)]
    bootstrap: Bootstrap,
    /// topic or topic:partition[,partition...] (repeatable).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long = "all-topics")]
    all_topics: bool,
    #[arg(long = "to-earliest", group = "to")]
    to_earliest: bool,
    #[arg(long = "to-latest", group = "to")]
    to_latest: bool,
    #[arg(long = "to-offset", group = "to", allow_hyphen_values = true)]
    to_offset: Option<i64>,
    /// YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm|-hh:mm] (UTC when no zone is given).
    #[arg(long = "to-datetime", group = "to")]
    to_datetime: Option<String>,
    #[arg(long = "shift-by", group = "to", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Show the new offsets without changing anything (the default).
    #[arg(long = "dry-run", conflicts_with = "execute")]
    dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    execute: bool,
}

pub fn run(cmd: GroupsCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            GroupsCommand::List { bootstrap, state } => {
                let admin = Admin::new(bootstrap.client_config()).await?;
                let groups = admin.list_groups().await?;
                if state {
                    println!("{:<40} {:<20} {:<10}", "GROUP", "STATE", "TYPE");
                }
                for g in groups {
                    if state {
                        println!("{:<40} {:<20} {:<10}", g.group_id, g.state, g.group_type);
                    } else {
                        println!("{}", g.group_id);
                    }
                }
                Ok(())
            }
            GroupsCommand::Describe { group, bootstrap, members } => {
                describe(&Admin::new(bootstrap.client_config()).await?, &group, members).await
            }
            GroupsCommand::Delete { group, bootstrap } => {
                let admin = Admin::new(bootstrap.client_config()).await?;
                for (g, r) in admin.delete_groups(std::slice::from_ref(&group)).await? {
                    r.with_context(|| format!("deleting group '{g}'"))?;
                    println!("Deletion of requested consumer groups ('{g}') was successful.");
                }
                Ok(())
            }
            GroupsCommand::ResetOffsets(a) => reset(a).await,
        }
    })
}

async fn describe(admin: &Admin, group: &str, members: bool) -> anyhow::Result<()> {
    let d = admin.describe_group(group).await?;
    let committed = admin.list_group_offsets(group).await?;
    if d.state == "Dead" && committed.is_empty() {
        bail!("Consumer group '{group}' does not exist.");
    }
    if members {
        println!(
            "{:<20} {:<50} {:<20} {:<20} {:<12} ASSIGNMENT",
            "GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"
        );
        for m in &d.members {
            let parts: Vec<String> = m.assignment.iter().map(|tp| tp.to_string()).collect();
            println!(
                "{:<20} {:<50} {:<20} {:<20} {:<12} {}",
                group,
                m.member_id,
                m.host,
                m.client_id,
                m.assignment.len(),
                parts.join(",")
            );
        }
        return Ok(());
    }
    if d.members.is_empty() {
        println!("Consumer group '{group}' has no active members.");
    }
    // Every committed partition, and every assigned one (assigned without a commit shows "-").
    let mut owner: BTreeMap<TopicPartition, (&str, &str, &str)> = BTreeMap::new();
    for m in &d.members {
        for tp in &m.assignment {
            owner.insert(tp.clone(), (m.member_id.as_str(), m.host.as_str(), m.client_id.as_str()));
        }
    }
    let partitions: BTreeSet<TopicPartition> = committed.keys().cloned().chain(owner.keys().cloned()).collect();
    let queries: Vec<(TopicPartition, i64)> = partitions.iter().map(|tp| (tp.clone(), LATEST)).collect();
    let ends = admin.list_offsets(&queries).await?;
    println!(
        "{:<20} {:<25} {:<10} {:<15} {:<15} {:<8} {:<50} {:<20} CLIENT-ID",
        "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST"
    );
    for tp in partitions {
        let end = ends.get(&tp).copied().flatten().map(|o| o.offset);
        let current = committed.get(&tp).map(|o| o.offset);
        let lag = match (current, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => "-".into(),
        };
        let (member, host, client) = owner.get(&tp).copied().unwrap_or(("-", "-", "-"));
        println!(
            "{:<20} {:<25} {:<10} {:<15} {:<15} {:<8} {:<50} {:<20} {}",
            group,
            tp.topic,
            tp.partition,
            current.map_or("-".into(), |c| c.to_string()),
            end.map_or("-".into(), |e| e.to_string()),
            lag,
            member,
            host,
            client
        );
    }
    Ok(())
}

async fn reset(a: ResetArgs) -> anyhow::Result<()> {
    let admin = Admin::new(a.bootstrap.client_config()).await?;
    let d = admin.describe_group(&a.group).await?;
    if d.is_active() {
        bail!(
            "Assignments can only be reset if the group '{}' is inactive, but the current state is {}.",
            a.group,
            d.state
        );
    }
    let committed = admin.list_group_offsets(&a.group).await?;
    let mut partitions: BTreeSet<TopicPartition> = BTreeSet::new();
    if a.all_topics {
        partitions.extend(committed.keys().cloned());
    }
    for t in &a.topics {
        match t.split_once(':') {
            Some((topic, ps)) => {
                for p in ps.split(',') {
                    partitions.insert(TopicPartition::new(
                        topic,
                        p.trim().parse::<i32>().with_context(|| format!("bad partition in --topic {t}"))?,
                    ));
                }
            }
            None => {
                let info = admin.describe_topics(std::slice::from_ref(t)).await?;
                for ti in info {
                    partitions.extend(ti.partitions.iter().map(|p| TopicPartition::new(&ti.name, p.id)));
                }
            }
        }
    }
    if partitions.is_empty() {
        bail!("name the partitions to reset with --topic or --all-topics");
    }
    let list = |ts: i64| -> Vec<(TopicPartition, i64)> { partitions.iter().map(|tp| (tp.clone(), ts)).collect() };
    let earliest = admin.list_offsets(&list(EARLIEST)).await?;
    let latest = admin.list_offsets(&list(LATEST)).await?;
    let bound = |tp: &TopicPartition, o: i64| -> i64 {
        // Kafka clamps a target outside the log to its ends.
        let lo = earliest.get(tp).copied().flatten().map_or(0, |x| x.offset);
        let hi = latest.get(tp).copied().flatten().map_or(o, |x| x.offset);
        o.clamp(lo, hi.max(lo))
    };
    let by_time = match &a.to_datetime {
        Some(dt) => Some(admin.list_offsets(&list(parse_datetime(dt)?)).await?),
        None => None,
    };
    let mut target: BTreeMap<TopicPartition, OffsetAndMetadata> = BTreeMap::new();
    for tp in &partitions {
        let current = committed.get(tp).map(|o| o.offset);
        let o = if a.to_earliest {
            bound(tp, 0)
        } else if a.to_latest {
            bound(tp, i64::MAX)
        } else if let Some(n) = a.to_offset {
            bound(tp, n)
        } else if let Some(n) = a.shift_by {
            let from = current.context(format!("{tp} has no committed offset to shift"))?;
            bound(tp, from.saturating_add(n))
        } else if let Some(found) = &by_time {
            // No record at or after the time: the end of the log.
            match found.get(tp).copied().flatten() {
                Some(x) => x.offset,
                None => bound(tp, i64::MAX),
            }
        } else {
            bail!("choose one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by");
        };
        target.insert(tp.clone(), OffsetAndMetadata { offset: o, metadata: String::new() });
    }
    println!("{:<20} {:<25} {:<10} NEW-OFFSET", "GROUP", "TOPIC", "PARTITION");
    for (tp, o) in &target {
        println!("{:<20} {:<25} {:<10} {}", a.group, tp.topic, tp.partition, o.offset);
    }
    if a.execute {
        admin.alter_group_offsets(&a.group, &target).await?;
    } else {
        eprintln!("(dry run: nothing changed; add --execute to commit these offsets)");
    }
    Ok(())
}

/// Kafka's --to-datetime format, to milliseconds since the epoch.
fn parse_datetime(s: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("--to-datetime '{s}' is not YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm|-hh:mm]");
    let (date, rest) = s.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date.split('-').map(|x| x.parse().map_err(|_| bad())).collect::<anyhow::Result<_>>()?;
    if d.len() != 3 {
        return Err(bad());
    }
    let (time, offset_ms) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']).filter(|&i| i >= 8) {
        let (t, z) = rest.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (h, m) = z[1..].split_once(':').unwrap_or((&z[1..3.min(z.len())], "0"));
        (t, sign * (h.parse::<i64>().map_err(|_| bad())? * 3_600_000 + m.parse::<i64>().map_err(|_| bad())? * 60_000))
    } else {
        (rest, 0)
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().map_err(|_| bad())).collect::<anyhow::Result<_>>()?;
    if t.len() != 3 {
        return Err(bad());
    }
    let millis: i64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().map_err(|_| bad())?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + millis - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::parse_datetime;

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00").unwrap(), 0);
        assert_eq!(parse_datetime("2024-02-29T12:30:15.250Z").unwrap(), 1_709_209_815_250);
        assert_eq!(parse_datetime("2024-02-29T13:30:15.250+01:00").unwrap(), 1_709_209_815_250);
        assert!(parse_datetime("yesterday").is_err());
    }
}
