//! The coordinator's statements exactly as its `query!` macros hold them —
//! read from the committed offline data (`coordinator/.sqlx/*.json`), so no
//! test keeps a copy that could drift — prepared on a connection and
//! `EXPLAIN`ed with parameters, and the scans their plans make.

use std::path::Path;

use serde_json::Value as Json;
use sqlx::PgConnection;

/// The text of the one coordinator statement containing every one of `needles`.
///
/// # Panics
/// When no statement, or more than one, contains them.
pub fn statement_containing(needles: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../coordinator/.sqlx");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read coordinator/.sqlx") {
        let path = entry.expect("a .sqlx entry").path();
        let text = std::fs::read_to_string(&path).expect("read a .sqlx record");
        let record: Json = serde_json::from_str(&text).expect("a .sqlx record is JSON");
        let query = record["query"].as_str().expect("a .sqlx record has its query").to_owned();
        if needles.iter().all(|needle| query.contains(needle)) {
            found.push(query);
        }
    }
    assert_eq!(found.len(), 1, "exactly one statement contains {needles:?}: {found:#?}");
    found.remove(0)
}

/// The plan of `sql` as a prepared statement executed with `arguments` (SQL
/// literals, comma-separated; empty for none), as `explain (options)`
/// gives it (`options` must include `format json`): under `plan_cache_mode
/// = force_generic_plan` the generic plan every call runs, else the plan
/// for these arguments.
///
/// # Panics
/// When the statement cannot be prepared or explained.
pub async fn prepared_plan(conn: &mut PgConnection, sql: &str, arguments: &str, options: &str) -> Json {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("prepare explained as {sql}")))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|err| panic!("prepare {sql}: {err}"));
    let arguments = if arguments.is_empty() { String::new() } else { format!("({arguments})") };
    let explain = format!("explain ({options}) execute explained{arguments}");
    let plan: Json = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|err| panic!("explain {sql} with {arguments}: {err}"));
    sqlx::raw_sql("deallocate explained").execute(&mut *conn).await.expect("deallocate");
    plan
}

/// One scan of a table in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// "Seq Scan", "Index Scan", "Bitmap Heap Scan", …
    pub node: String,
    /// The table.
    pub relation: String,
    /// The index, for index scans.
    pub index: Option<String>,
}

/// Every scan of a table in `plan` (the output of `explain (format json)`),
/// subplans and CTEs included.
pub fn scans(plan: &Json) -> Vec<Scan> {
    let mut found = Vec::new();
    collect_scans(plan, &mut found);
    found
}

fn collect_scans(node: &Json, found: &mut Vec<Scan>) {
    match node {
        Json::Array(items) => items.iter().for_each(|item| collect_scans(item, found)),
        Json::Object(fields) => {
            if let (Some(Json::String(kind)), Some(Json::String(relation))) =
                (fields.get("Node Type"), fields.get("Relation Name"))
            {
                // Updates and inserts name their table too; they are not scans.
                if kind.contains("Scan") {
                    let index = fields.get("Index Name").and_then(Json::as_str).map(str::to_owned);
                    found.push(Scan { node: kind.clone(), relation: relation.clone(), index });
                }
            }
            fields.values().for_each(|value| collect_scans(value, found));
        }
        _ => {}
    }
}

/// The scans of `plan` that read one of `tables` row by row or through a
/// bitmap: what the hot path's settings are there to rule out.
pub fn full_or_bitmap_scans(plan: &Json, tables: &[&str]) -> Vec<Scan> {
    scans(plan)
        .into_iter()
        .filter(|scan| tables.contains(&scan.relation.as_str()))
        .filter(|scan| scan.node == "Seq Scan" || scan.node.starts_with("Bitmap"))
        .collect()
}

/// `plan` (the output of `explain (format json)`) as an indented outline,
/// one node a line with its table, index, filter and rows, for the test's
/// output.
pub fn outline(plan: &Json) -> String {
    let mut out = String::new();
    if let Some(root) = plan.get(0).and_then(|top| top.get("Plan")) {
        outline_node(root, 0, &mut out);
    }
    out
}

fn outline_node(node: &Json, depth: usize, out: &mut String) {
    let field = |name: &str| node.get(name).and_then(Json::as_str);
    out.push_str(&"  ".repeat(depth));
    out.push_str(field("Node Type").unwrap_or("?"));
    if let Some(relation) = field("Relation Name") {
        out.push_str(&format!(" on {relation}"));
    }
    if let Some(index) = field("Index Name") {
        out.push_str(&format!(" using {index}"));
    }
    for condition in ["Index Cond", "Filter"] {
        if let Some(text) = field(condition) {
            out.push_str(&format!(" [{condition}: {text}]"));
        }
    }
    if let Some(rows) = node.get("Actual Rows") {
        out.push_str(&format!(" (rows {rows})"));
    }
    out.push('\n');
    for child in node.get("Plans").and_then(Json::as_array).into_iter().flatten() {
        outline_node(child, depth + 1, out);
    }
}
