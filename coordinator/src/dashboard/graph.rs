//! A swarm's tasks as a dependency graph, drawn on the server as SVG: one
//! column per depth (a task sits one column right of its deepest
//! dependency), each task a box coloured by its status and linked to its
//! page, with its validator round when it has a validator, and a line from
//! each dependency. The first [`NODES`] tasks of the swarm are drawn.

use std::collections::HashMap;
use std::fmt::Write;

use uuid::Uuid;

use super::html::escape;
use crate::db::graph::Node;

/// Tasks drawn at most.
pub(crate) const NODES: i64 = 300;

const COLUMN: usize = 200;
const ROW: usize = 32;
const BOX_WIDTH: usize = 170;
const BOX_HEIGHT: usize = 24;
/// Characters of a task's name a box shows.
const LABEL: usize = 22;

/// The graph of `nodes`; empty when no task depends on another.
pub(crate) fn svg(nodes: &[Node]) -> String {
    if nodes.iter().all(|node| node.depends_on.is_empty()) {
        return String::new();
    }
    let depth = depths(nodes);
    let mut rows = vec![0_usize; depth.iter().max().map_or(1, |max| max + 1)];
    let mut at: HashMap<Uuid, (usize, usize)> = HashMap::with_capacity(nodes.len());
    for (node, &column) in nodes.iter().zip(&depth) {
        at.insert(node.id, (column * COLUMN + 4, rows[column] * ROW + 4));
        rows[column] += 1;
    }
    let width = rows.len() * COLUMN;
    let height = rows.iter().max().copied().unwrap_or(1) * ROW + 8;
    let mut html = format!(
        r#"<svg id="graph" class="graph" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="dependency graph">"#
    );
    for node in nodes {
        let (x, y) = at[&node.id];
        for dependency in &node.depends_on {
            if let Some(&(from_x, from_y)) = at.get(dependency) {
                let (x1, y1, y2) = (from_x + BOX_WIDTH, from_y + BOX_HEIGHT / 2, y + BOX_HEIGHT / 2);
                let middle = (x1 + x) / 2;
                let _ = write!(html, r#"<path class="edge" d="M{x1},{y1} C{middle},{y1} {middle},{y2} {x},{y2}"/>"#);
            }
        }
    }
    for node in nodes {
        let (x, y) = at[&node.id];
        let name = node.key.clone().unwrap_or_else(|| node.id.to_string());
        let mut label: String = name.chars().take(LABEL).collect();
        if label.len() < name.len() {
            label.push('…');
        }
        if node.max_rounds > 1 || node.stage == "validate" {
            let _ = write!(label, " · {} {}/{}", node.stage, node.round, node.max_rounds);
        }
        let _ = write!(
            html,
            r#"<a href="/tasks/{id}" data-task="{id}"><rect class="node {status}" x="{x}" y="{y}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="4"><title>{title} ({status})</title></rect><text x="{tx}" y="{ty}">{label}</text></a>"#,
            id = node.id,
            status = node.status,
            title = escape(&name),
            tx = x + 6,
            ty = y + 16,
            label = escape(&label),
        );
    }
    html.push_str("</svg>");
    html
}

/// Each node's column: one past its deepest dependency among `nodes`
/// (dependencies not drawn count as column 0's left).
fn depths(nodes: &[Node]) -> Vec<usize> {
    let index: HashMap<Uuid, usize> = nodes.iter().enumerate().map(|(at, node)| (node.id, at)).collect();
    let mut depth = vec![0_usize; nodes.len()];
    // A graph is acyclic (submission refuses cycles): a path has at most
    // `nodes.len()` steps, so that many passes settle every depth.
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (at, node) in nodes.iter().enumerate() {
            let deepest = node.depends_on.iter().filter_map(|id| index.get(id)).map(|&up| depth[up] + 1).max();
            if let Some(deepest) = deepest.filter(|&deepest| deepest > depth[at]) {
                depth[at] = deepest;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::TaskStatus;

    fn node(id: u128, key: &str, depends_on: &[u128]) -> Node {
        Node {
            id: Uuid::from_u128(id),
            key: Some(key.into()),
            status: TaskStatus::Ready,
            stage: "build".into(),
            round: 1,
            max_rounds: 1,
            depends_on: depends_on.iter().map(|&id| Uuid::from_u128(id)).collect(),
        }
    }

    #[test]
    fn tasks_sit_right_of_their_deepest_dependency() {
        // d depends on a and c; c on b; b on a; listed out of order.
        let nodes = [node(4, "d", &[1, 3]), node(1, "a", &[]), node(3, "c", &[2]), node(2, "b", &[1])];
        assert_eq!(depths(&nodes), [3, 0, 2, 1]);
    }

    #[test]
    fn names_are_escaped_and_lonely_tasks_draw_nothing() {
        assert!(svg(&[node(1, "a", &[])]).is_empty());
        let drawn = svg(&[node(1, "<b>", &[]), node(2, "x", &[1])]);
        assert!(drawn.contains("&lt;b&gt;") && !drawn.contains("<b>"), "{drawn}");
        assert_eq!(drawn.matches("<path").count(), 1);
    }
}
