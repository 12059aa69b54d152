//! Validator stages, as a pure decision: after a builder succeeds its result
//! goes to the validator; a validator's verdict either passes the task (with
//! the builder's result), sends it back to the builder with the verdict as
//! feedback, or — out of rounds — kills it with both kept on its attempts.

use serde_json::Value as Json;

use crate::db::stages::NextStage;
use crate::status::TaskStatus;

/// A validator's verdict, read from its result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// `"verdict": "pass"`.
    Pass,
    /// `"verdict": "fail"`; the whole result is the feedback.
    Fail,
    /// No readable verdict.
    Missing,
}

/// Reads `"verdict": "pass" | "fail"` (any case) from a validator's result.
pub(crate) fn verdict_of(result: &Json) -> Verdict {
    match result.get("verdict").and_then(Json::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some("pass") => Verdict::Pass,
        Some("fail") => Verdict::Fail,
        _ => Verdict::Missing,
    }
}

/// Where a task with a validator goes after one of its attempts succeeded.
pub(crate) fn after_success(
    status: TaskStatus,
    stage: &str,
    round: i32,
    max_rounds: i32,
    result: &Json,
    build_result: Option<&Json>,
) -> NextStage {
    let finish = |status, result: Option<Json>, error: Option<String>| NextStage::Finish { status, result, error };
    let final_pass = stage == "validate" && verdict_of(result) == Verdict::Pass;
    if status == TaskStatus::Cancelling && !final_pass {
        return finish(TaskStatus::Cancelled, None, Some("cancelled by an operator".into()));
    }
    if stage != "validate" {
        return NextStage::Validate(result.clone());
    }
    match verdict_of(result) {
        Verdict::Pass => finish(TaskStatus::Succeeded, build_result.cloned(), None),
        Verdict::Fail if round < max_rounds => NextStage::Rebuild(result.clone()),
        Verdict::Fail => finish(
            TaskStatus::Dead,
            None,
            Some(format!("the validator rejected the result in all {max_rounds} round(s); last verdict: {result}")),
        ),
        Verdict::Missing => finish(
            TaskStatus::Dead,
            None,
            Some(format!("the validator's result has no verdict (\"verdict\": \"pass\" or \"fail\"): {result}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stages_follow_the_verdicts() {
        let built = json!({"patch": "x"});
        let pass = json!({"verdict": "PASS"});
        let fail = json!({"verdict": "fail", "feedback": "add tests"});
        let running = TaskStatus::Running;
        assert_eq!(after_success(running, "build", 1, 3, &built, None), NextStage::Validate(built.clone()));
        assert_eq!(
            after_success(running, "validate", 1, 3, &pass, Some(&built)),
            NextStage::Finish { status: TaskStatus::Succeeded, result: Some(built.clone()), error: None }
        );
        assert_eq!(after_success(running, "validate", 2, 3, &fail, Some(&built)), NextStage::Rebuild(fail.clone()));
        let NextStage::Finish { status, error, .. } = after_success(running, "validate", 3, 3, &fail, Some(&built))
        else {
            panic!()
        };
        assert_eq!(status, TaskStatus::Dead);
        assert!(error.unwrap().contains("add tests"));
        let NextStage::Finish { status, error, .. } = after_success(running, "validate", 1, 3, &json!({"ok": 1}), None)
        else {
            panic!()
        };
        assert_eq!(status, TaskStatus::Dead);
        assert!(error.unwrap().contains("no verdict"));
    }

    #[test]
    fn a_cancelled_task_stops_between_stages_unless_it_just_passed() {
        let cancelling = TaskStatus::Cancelling;
        let NextStage::Finish { status, .. } = after_success(cancelling, "build", 1, 3, &json!({}), None) else {
            panic!()
        };
        assert_eq!(status, TaskStatus::Cancelled);
        let NextStage::Finish { status, .. } =
            after_success(cancelling, "validate", 1, 3, &json!({"verdict": "pass"}), Some(&json!({})))
        else {
            panic!()
        };
        assert_eq!(status, TaskStatus::Succeeded);
    }
}
