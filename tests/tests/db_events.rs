//! The event log's statements on a real database: the sequencer numbers
//! committed rows only, in the order they became visible, a batch row
//! taking one number per event, with no gaps even while writers commit,
//! roll back and two sessions try to lead the numbering at once; a row that commits late
//! is numbered after everything numbered before it, so a reader never sees
//! a number appear below one it has read.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use hive_coordinator::db::events::{self, Batch};
use hive_tests::postgres::fresh_database;
use serde_json::json;
use uuid::Uuid;

fn workers(n: usize) -> Batch {
    Batch { worker_ids: (0..n).map(|_| Uuid::new_v4()).collect(), ..Batch::default() }
}

/// Numbers once, as the sequencer does: from a session that leads.
async fn number(pool: &sqlx::PgPool) -> Option<i64> {
    let mut conn = pool.acquire().await.unwrap().detach();
    assert!(events::lead(&mut conn).await.unwrap(), "no other session leads");
    let head = events::number(&mut conn, 1000).await.unwrap();
    events::resign(&mut conn).await.unwrap();
    head
}

#[tokio::test]
async fn committed_rows_are_numbered_in_order_and_a_late_commit_after_them() {
    let db = fresh_database().await;
    let mut slow = db.pool.begin().await.unwrap();
    events::append(&mut *slow, "worker.joined", &workers(1)).await.unwrap();
    for _ in 0..3 {
        events::append(&db.pool, "worker.lost", &workers(1)).await.unwrap();
    }
    let mut rolled_back = db.pool.begin().await.unwrap();
    events::append(&mut *rolled_back, "worker.gone", &workers(1)).await.unwrap();
    rolled_back.rollback().await.unwrap();
    // A row of three events takes three numbers.
    events::append(&db.pool, "worker.draining", &workers(3)).await.unwrap();
    // An empty batch appends nothing.
    events::append(&db.pool, "worker.draining", &Batch::default()).await.unwrap();

    assert_eq!(number(&db.pool).await, Some(6), "the three committed rows and the batch of three");
    assert_eq!(number(&db.pool).await, None, "nothing left that is visible");
    slow.commit().await.unwrap();
    assert_eq!(number(&db.pool).await, Some(7));

    let read = events::after(&db.pool, 0, i64::MAX, 100).await.unwrap();
    let numbered: Vec<(i64, &str)> = read.iter().map(|event| (event.seq, event.kind.as_str())).collect();
    assert_eq!(
        numbered,
        [
            (1, "worker.lost"),
            (2, "worker.lost"),
            (3, "worker.lost"),
            (4, "worker.draining"),
            (5, "worker.draining"),
            (6, "worker.draining"),
            (7, "worker.joined"),
        ]
    );
    let head = events::head(&db.pool).await.unwrap();
    assert_eq!((head.last_seq, head.first_seq), (7, 1));
    // A page may end inside a row; the next goes on from there.
    let page = events::after(&db.pool, 4, i64::MAX, 1).await.unwrap();
    assert_eq!(page.iter().map(|event| event.seq).collect::<Vec<_>>(), [5]);
    let bounded = events::after(&db.pool, 0, 2, 100).await.unwrap();
    assert_eq!(bounded.iter().map(|event| event.seq).collect::<Vec<_>>(), [1, 2]);
}

#[tokio::test]
async fn writers_and_two_would_be_sequencers_leave_no_gap() {
    let db = fresh_database().await;
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..6 {
        let pool = db.pool.clone();
        writers.spawn(async move {
            let mut written = 0;
            for round in 0..40 {
                let mut tx = pool.begin().await.unwrap();
                let batch = Batch {
                    details: (0..=round % 3).map(|i| json!({ "writer": writer, "round": round, "i": i })).collect(),
                    ..Batch::default()
                };
                events::append(&mut *tx, "cooldown.started", &batch).await.unwrap();
                if round % 5 == 4 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                    written += batch.details.len();
                }
            }
            written
        });
    }
    // Two sessions try to lead while the writers write; the one that
    // leads numbers, the other keeps trying.
    let sequencers: Vec<_> = (0..2)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap().detach();
                let mut leading = false;
                for _ in 0..200 {
                    leading = leading || events::lead(&mut conn).await.unwrap();
                    if leading {
                        events::number(&mut conn, 7).await.unwrap();
                    }
                    tokio::task::yield_now().await;
                }
                if leading {
                    events::resign(&mut conn).await.unwrap();
                }
                leading
            })
        })
        .collect();
    let mut written = 0;
    while let Some(count) = writers.join_next().await {
        written += count.unwrap();
    }
    let mut leaders = 0;
    for sequencer in sequencers {
        leaders += usize::from(sequencer.await.unwrap());
    }
    assert!(leaders >= 1, "a session led (the second may take over once the first closes)");
    while number(&db.pool).await.is_some() {}

    let read = events::after(&db.pool, 0, i64::MAX, 10_000).await.unwrap();
    let seqs: Vec<i64> = read.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=i64::try_from(written).unwrap()).collect::<Vec<_>>(), "every committed event, once, no gap");
    let rolled_back = read.iter().filter(|event| event.detail.as_ref().unwrap()["round"].as_i64().unwrap() % 5 == 4);
    assert_eq!(rolled_back.count(), 0);
    let unnumbered: i64 =
        sqlx::query_scalar("select count(*) from events where seq is null").fetch_one(&db.pool).await.unwrap();
    assert_eq!(unnumbered, 0);
}
