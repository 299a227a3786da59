//! The store against openraft's conformance suite, and what the suite does not cover:
//! restarts, torn and damaged files, purge and truncation on disk.

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::RaftLogStorageExt;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Membership, RaftLogReader};
use tempfile::TempDir;

use super::*;
use crate::cluster::image::MetadataCommand;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
    }
}

/// A command entry. Appended and read back, never applied: `MetadataImage::apply` is not
/// this module's.
fn command(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(MetadataCommand::Bootstrap {
            cluster_id: format!("cluster-{index}"),
        }),
    }
}

/// Blank entries `first..=last` in `term`.
fn blanks(term: u64, first: u64, last: u64) -> Vec<Entry> {
    (first..=last).map(|i| blank(term, i)).collect()
}

fn image(cluster_id: &str) -> MetadataImage {
    MetadataImage {
        cluster_id: cluster_id.into(),
        next_producer_id: 7,
        ..MetadataImage::default()
    }
}

struct Node {
    log: LogStore,
    state_machine: StateMachineStore,
    applied: watch::Receiver<Applied>,
}

fn open_node(dir: &Path) -> Node {
    let (tx, applied) = watch::channel(Applied::default());
    let (log, state_machine) = open(dir, tx).expect("open the controller store");
    Node {
        log,
        state_machine,
        applied,
    }
}

fn open_error(dir: &Path) -> String {
    let (tx, _rx) = watch::channel(Applied::default());
    match open(dir, tx) {
        Ok(_) => panic!("opening {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

async fn all_entries(log: &mut LogStore) -> Vec<Entry> {
    log.try_get_log_entries(..).await.expect("read the log")
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn log_path(dir: &TempDir) -> PathBuf {
    dir.path().join(LOG_FILE)
}

/// Temp directories for openraft's suite; the directory lives as long as the stores.
struct TempStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let (tx, _rx) = watch::channel(Applied::default());
        let (log, state_machine) = open(dir.path(), tx).expect("open the controller store");
        Ok((dir, log, state_machine))
    }
}

#[test]
fn openraft_suite() {
    Suite::test_all(TempStores).expect("openraft's storage suite passes");
}

#[tokio::test]
async fn restart_keeps_vote_committed_entries_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![blank(1, 1), membership(1, 2, &[1, 2, 3]), command(1, 3)];
    let snapshot_meta = {
        let mut node = open_node(dir.path());
        node.log.save_vote(&Vote::new(4, 2)).await.unwrap();
        node.log.blocking_append(entries.clone()).await.unwrap();
        node.log.save_committed(Some(log_id(1, 2))).await.unwrap();
        node.state_machine
            .apply(entries[..2].to_vec())
            .await
            .unwrap();
        let mut builder = node.state_machine.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap().meta
    };

    let mut node = open_node(dir.path());
    assert_eq!(node.log.read_vote().await.unwrap(), Some(Vote::new(4, 2)));
    assert_eq!(node.log.read_committed().await.unwrap(), Some(log_id(1, 2)));
    let state = node.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    let read_back = all_entries(&mut node.log).await;
    assert_eq!(format!("{read_back:?}"), format!("{entries:?}"));

    let current = node.state_machine.get_current_snapshot().await.unwrap();
    assert_eq!(current.map(|s| s.meta), Some(snapshot_meta.clone()));
    let (last_applied, last_membership) = node.state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(1, 2)));
    assert_eq!(last_membership, snapshot_meta.last_membership);
    assert_eq!(
        node.applied.borrow().index,
        2,
        "the snapshot is published at open"
    );
}

#[tokio::test]
async fn an_installed_snapshot_replaces_the_image_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(3, 40)),
        last_membership: StoredMembership::new(
            Some(log_id(2, 10)),
            Membership::new(vec![BTreeSet::from([1, 2, 3])], None),
        ),
        snapshot_id: "from-the-leader".into(),
    };
    {
        let mut node = open_node(dir.path());
        node.state_machine.apply([blank(1, 1)]).await.unwrap();
        let mut received = node.state_machine.begin_receiving_snapshot().await.unwrap();
        received
            .get_mut()
            .extend(serde_json::to_vec(&image("c1")).unwrap());
        node.state_machine
            .install_snapshot(&meta, received)
            .await
            .unwrap();
        let published = node.applied.borrow().clone();
        assert_eq!(published.index, 40);
        assert_eq!(*published.image, image("c1"));
    }

    let mut node = open_node(dir.path());
    let applied = node.state_machine.applied_state().await.unwrap();
    assert_eq!(applied, (meta.last_log_id, meta.last_membership.clone()));
    assert_eq!(*node.applied.borrow().image, image("c1"));
    let current = node
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.meta, meta);
    assert_eq!(
        current.snapshot.into_inner(),
        serde_json::to_vec(&image("c1")).unwrap()
    );
}

#[tokio::test]
async fn apply_answers_every_entry_and_publishes_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = open_node(dir.path());
    assert_eq!(
        node.applied.borrow().index,
        0,
        "nothing to publish before any apply"
    );
    let results = node
        .state_machine
        .apply([blank(1, 1), membership(1, 2, &[1]), blank(2, 3)])
        .await
        .unwrap();
    assert_eq!(results, vec![CommandResult::Done; 3]);
    assert!(node.applied.has_changed().unwrap());
    assert_eq!(node.applied.borrow_and_update().index, 3);
    let (_, last_membership) = node.state_machine.applied_state().await.unwrap();
    assert_eq!(last_membership.log_id(), &Some(log_id(1, 2)));
}

/// Damages the log file of a store holding entries 1..=3, reopens it, and checks which
/// entries survive; then that the cut log takes the next append and reopens whole.
async fn check_torn(name: &str, damage: impl FnOnce(&mut Vec<u8>, &[u64]), survivors: &[u64]) {
    let dir = tempfile::tempdir().unwrap();
    let positions: Vec<u64> = {
        let mut node = open_node(dir.path());
        node.log
            .blocking_append(vec![blank(1, 1), command(1, 2), blank(1, 3)])
            .await
            .unwrap();
        let disk = node.log.disk.lock().unwrap();
        disk.positions.values().copied().collect()
    };
    let mut bytes = fs::read(log_path(&dir)).unwrap();
    damage(&mut bytes, &positions);
    fs::write(log_path(&dir), &bytes).unwrap();

    let mut node = open_node(dir.path());
    assert_eq!(
        indexes(&all_entries(&mut node.log).await),
        survivors,
        "{name}"
    );
    let next = survivors.last().unwrap() + 1;
    node.log.blocking_append([blank(2, next)]).await.unwrap();
    drop(node);
    let mut node = open_node(dir.path());
    let mut expected = survivors.to_vec();
    expected.push(next);
    assert_eq!(
        indexes(&all_entries(&mut node.log).await),
        expected,
        "{name} after append"
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_log_reopens() {
    check_torn(
        "cut in the last payload",
        |b, _| b.truncate(b.len() - 3),
        &[1, 2],
    )
    .await;
    check_torn(
        "cut in the last record header",
        |b, p| b.truncate(p[2] as usize + 5),
        &[1, 2],
    )
    .await;
    check_torn(
        "last payload flipped",
        |b, _| *b.last_mut().unwrap() ^= 1,
        &[1, 2],
    )
    .await;
    check_torn(
        "partial header appended",
        |b, _| b.extend([0xab; 3]),
        &[1, 2, 3],
    )
    .await;
    check_torn("zeros appended", |b, _| b.extend([0; 4096]), &[1, 2, 3]).await;
    check_torn(
        "last record zeroed",
        |b, p| b[p[2] as usize..].fill(0),
        &[1, 2],
    )
    .await;
}

/// Damages a store's files with `damage` and checks that opening fails naming `file` and
/// saying `why`.
async fn check_damaged(damage: impl FnOnce(&Path), file: &str, why: &str) {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut node = open_node(dir.path());
        node.log.save_vote(&Vote::new(1, 1)).await.unwrap();
        node.log.blocking_append(blanks(1, 1, 3)).await.unwrap();
        node.state_machine.apply(blanks(1, 1, 2)).await.unwrap();
        let mut builder = node.state_machine.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap();
    }
    damage(dir.path());
    let error = open_error(dir.path());
    assert!(error.contains(file), "{error:?} names {file}");
    assert!(error.contains(why), "{error:?} says {why:?}");
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn damage_before_the_tail_is_an_error_naming_the_file() {
    let first_payload = FileHeader::LEN + RECORD_HEADER_BYTES as usize + 2;
    check_damaged(
        |dir| flip(&dir.join(LOG_FILE), first_payload),
        LOG_FILE,
        "record at byte 5 is corrupt (checksum mismatch)",
    )
    .await;
    for length_byte in 0..4 {
        check_damaged(
            |dir| flip(&dir.join(LOG_FILE), FileHeader::LEN + length_byte),
            LOG_FILE,
            "record at byte 5 is corrupt (length",
        )
        .await;
    }
    check_damaged(|dir| flip(&dir.join(LOG_FILE), 0), LOG_FILE, "magic").await;
    check_damaged(|dir| flip(&dir.join(LOG_FILE), 4), LOG_FILE, "version").await;
    check_damaged(|dir| flip(&dir.join(STATE_FILE), 9), STATE_FILE, "checksum").await;
    check_damaged(
        |dir| flip(&dir.join(SNAPSHOT_FILE), 12),
        SNAPSHOT_FILE,
        "checksum",
    )
    .await;
}

#[tokio::test]
async fn purge_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let len_before_purge = {
        let mut node = open_node(dir.path());
        node.log.blocking_append(blanks(1, 1, 10)).await.unwrap();
        node.state_machine.apply(blanks(1, 1, 7)).await.unwrap();
        let mut builder = node.state_machine.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap();
        let len = fs::metadata(log_path(&dir)).unwrap().len();
        // Purging 2 of 10 leaves the purged records in the file: not worth a rewrite yet.
        node.log.purge(log_id(1, 2)).await.unwrap();
        assert_eq!(fs::metadata(log_path(&dir)).unwrap().len(), len);
        len
    };
    {
        let mut node = open_node(dir.path());
        let state = node.log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
        assert_eq!(
            indexes(&all_entries(&mut node.log).await),
            (3..=10).collect::<Vec<_>>()
        );
        // Now the purged records outweigh the rest: the file is rewritten without them.
        node.log.purge(log_id(1, 7)).await.unwrap();
        let len = fs::metadata(log_path(&dir)).unwrap().len();
        assert!(len < len_before_purge / 2, "{len} < {len_before_purge} / 2");
        node.log.blocking_append([blank(2, 11)]).await.unwrap();
    }
    let mut node = open_node(dir.path());
    let state = node.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 7)));
    assert_eq!(state.last_log_id, Some(log_id(2, 11)));
    assert_eq!(indexes(&all_entries(&mut node.log).await), [8, 9, 10, 11]);
    assert_eq!(
        node.applied.borrow().index,
        7,
        "the snapshot is the state at open"
    );
}

#[tokio::test]
async fn purge_past_the_end_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut node = open_node(dir.path());
        node.log.blocking_append(blanks(1, 1, 3)).await.unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(2, 20)),
            ..SnapshotMeta::default()
        };
        let received = Box::new(Cursor::new(serde_json::to_vec(&image("c2")).unwrap()));
        node.state_machine
            .install_snapshot(&meta, received)
            .await
            .unwrap();
        node.log.purge(log_id(2, 20)).await.unwrap();
        assert_eq!(
            fs::metadata(log_path(&dir)).unwrap().len(),
            FileHeader::LEN as u64
        );
        node.log.blocking_append(blanks(2, 21, 22)).await.unwrap();
    }
    let mut node = open_node(dir.path());
    assert_eq!(indexes(&all_entries(&mut node.log).await), [21, 22]);
    let state = node.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 20)));
}

#[tokio::test]
async fn a_log_purged_past_its_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut node = open_node(dir.path());
        node.log.blocking_append(blanks(1, 1, 5)).await.unwrap();
        node.state_machine.apply(blanks(1, 1, 2)).await.unwrap();
        let mut builder = node.state_machine.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap();
        // As if openraft purged for a snapshot from the leader the crash kept from the disk.
        node.log.purge(log_id(1, 4)).await.unwrap();
    }
    let error = open_error(dir.path());
    assert!(
        error.contains("purged up to index 4 but the latest snapshot covers only up to index 2"),
        "{error}"
    );
}

#[tokio::test]
async fn truncate_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut node = open_node(dir.path());
        node.log.blocking_append(blanks(1, 1, 5)).await.unwrap();
        node.log.truncate(log_id(1, 3)).await.unwrap();
        assert_eq!(indexes(&all_entries(&mut node.log).await), [1, 2]);
        node.log.blocking_append([command(2, 3)]).await.unwrap();
    }
    let mut node = open_node(dir.path());
    let entries = all_entries(&mut node.log).await;
    assert_eq!(indexes(&entries), [1, 2, 3]);
    assert_eq!(
        entries[2].log_id,
        log_id(2, 3),
        "the new leader's entry replaced the old"
    );
}

#[tokio::test]
async fn an_append_that_would_leave_a_hole_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = open_node(dir.path());
    node.log.blocking_append(blanks(1, 1, 2)).await.unwrap();
    let error = node.log.blocking_append([blank(1, 4)]).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("indexes 4..=4 after last index 2"),
        "{error}"
    );
    assert_eq!(indexes(&all_entries(&mut node.log).await), [1, 2]);
}

#[test]
fn scanning_a_clean_log_finds_every_record() {
    let entries = vec![blank(1, 1), command(1, 2), membership(1, 3, &[1, 2])];
    let records = encode_records(&entries).unwrap();
    let mut bytes = LOG_HEADER.bytes();
    bytes.extend_from_slice(&records.bytes);
    let scan = scan_log(&bytes, Path::new("metadata.log")).unwrap();
    assert!(scan.torn.is_none());
    assert_eq!(scan.valid_len, bytes.len() as u64);
    let found: BTreeMap<u64, u64> = scan
        .records
        .iter()
        .map(|r| (r.entry.log_id.index, r.position))
        .collect();
    let expected: BTreeMap<u64, u64> = records
        .offsets
        .iter()
        .map(|&(index, offset)| (index, offset + FileHeader::LEN as u64))
        .collect();
    assert_eq!(found, expected);
}

/// Set in the child process of [`sigkill_loses_no_acknowledged_entry`]: the directory it
/// appends to until killed.
const SIGKILL_CHILD_DIR: &str = "SLUICE_STORE_SIGKILL_CHILD_DIR";
/// Acknowledged appends the parent waits for before it kills the child.
const SIGKILL_AFTER_ACKS: u64 = 300;

/// A child process (this test binary again) appends batches and prints each acknowledged
/// last index; the parent kills it with SIGKILL at whatever point it has reached and
/// reopens the log: every acknowledged entry is there, the log has no hole, and it takes
/// appends again. Any kill point must pass, so the timing does not make it flaky.
#[test]
fn sigkill_loses_no_acknowledged_entry() {
    if let Some(dir) = std::env::var_os(SIGKILL_CHILD_DIR) {
        return append_until_killed(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cluster::store::tests::sigkill_loses_no_acknowledged_entry",
            "--nocapture",
        ])
        .env(SIGKILL_CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the child test process");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = std::io::BufRead::lines(stdout);
    let mut acked = 0;
    while acked < SIGKILL_AFTER_ACKS {
        let line = lines
            .next()
            .expect("the child acknowledges appends until killed");
        acked = parse_ack(&line.unwrap()).unwrap_or(acked);
    }
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    // Acknowledgements printed before the kill are still in the pipe.
    for line in lines.map_while(Result::ok) {
        acked = parse_ack(&line).unwrap_or(acked);
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut node = open_node(dir.path());
        let found = indexes(&all_entries(&mut node.log).await);
        let last = *found.last().unwrap();
        assert!(
            last >= acked,
            "acknowledged up to {acked}, found up to {last}"
        );
        assert_eq!(found, (1..=last).collect::<Vec<_>>());
        node.log
            .blocking_append([blank(2, last + 1)])
            .await
            .unwrap();
    });
}

/// The index in a line `acked N` of the child; `None` for the test harness's own lines.
fn parse_ack(line: &str) -> Option<u64> {
    line.strip_prefix("acked ")?.parse().ok()
}

/// The child of [`sigkill_loses_no_acknowledged_entry`]: appends batches of three entries
/// (records written together, as openraft batches them) until killed.
fn append_until_killed(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut node = open_node(dir);
        for batch in 0..100_000 {
            let first = batch * 3 + 1;
            let entries = vec![
                command(1, first),
                blank(1, first + 1),
                membership(1, first + 2, &[1, 2]),
            ];
            node.log.blocking_append(entries).await.unwrap();
            println!("acked {}", first + 2);
        }
    });
    panic!("the parent did not kill this child");
}
