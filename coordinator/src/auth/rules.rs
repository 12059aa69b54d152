//! The one table of who may call what: every RPC the coordinator serves,
//! the roles it allows, and whether it changes state (so a refusal of it is
//! audited). Handlers then check ownership: a worker acts only for its own
//! registration, a submitter only on its own swarms, an agent only for its
//! own attempt.
//!
//! Health checks and server reflection are open: probes and `grpcurl list`
//! need no token, and reflection tells only what the .proto files say.

use hive_shared::tokens::Role;

/// Who may call one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Anyone, without a token.
    Open,
    /// Callers of these roles.
    Roles {
        /// The roles allowed.
        roles: &'static [Role],
        /// Whether the RPC changes state: refusals are audited.
        changes_state: bool,
    },
}

impl Rule {
    /// Whether `role` may make the call.
    pub(crate) fn allows(self, role: Role) -> bool {
        match self {
            Rule::Open => true,
            Rule::Roles { roles, .. } => roles.contains(&role),
        }
    }
}

use Role::{Admin, Agent, Submitter, Viewer, Worker};

const WORKERS: &[Role] = &[Admin, Worker];
const AGENTS: &[Role] = &[Admin, Agent];
const READERS: &[Role] = &[Admin, Submitter, Viewer];
const FLEET_READERS: &[Role] = &[Admin, Viewer];
const SUBMITTERS: &[Role] = &[Admin, Submitter];
const ADMINS: &[Role] = &[Admin];

const fn reads(roles: &'static [Role]) -> Rule {
    Rule::Roles { roles, changes_state: false }
}

const fn changes(roles: &'static [Role]) -> Rule {
    Rule::Roles { roles, changes_state: true }
}

/// The rule for the RPC at `path` (`/package.Service/Method`). An RPC with
/// no entry is refused to everyone.
pub(crate) fn rule(path: &str) -> Rule {
    let Some((service, method)) = path.strip_prefix('/').and_then(|path| path.split_once('/')) else {
        return reads(&[]);
    };
    match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Rule::Open,
        "hive.v1.WorkerService" => worker_rule(method),
        "hive.v1.AdminService" => admin_rule(method),
        _ => reads(&[]),
    }
}

fn worker_rule(method: &str) -> Rule {
    match method {
        // Reports, beats, output and sessions change only the caller's own
        // attempts; they are the workers' hot path and are not audited.
        "Register" | "Claim" | "Complete" | "Fail" | "Heartbeat" | "AppendLogs" | "SaveSession" | "LoadSession" => {
            reads(WORKERS)
        }
        "AcquireLock" | "ReleaseLock" | "ReportProgress" => reads(AGENTS),
        _ => reads(&[]),
    }
}

fn admin_rule(method: &str) -> Rule {
    match method {
        "GetTask" | "ListTasks" | "GetTaskLogs" | "GetStats" => reads(READERS),
        "ListWorkers"
        | "ListLocks"
        | "ListAudit"
        | "VerifyAudit"
        | "ListPauses"
        | "ListCooldowns"
        | "Watch"
        | "ListWebhookDeliveries" => reads(FLEET_READERS),
        "SubmitTasks" | "CancelTask" | "CancelTasks" => changes(SUBMITTERS),
        "RetryTasks"
        | "StopWorkers"
        | "SetSwarmBudget"
        | "CreateToken"
        | "RevokeToken"
        | "Pause"
        | "Resume"
        | "ClearCooldown"
        | "ResendWebhookDelivery" => changes(ADMINS),
        "ListTokens" => reads(ADMINS),
        _ => reads(&[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_reflection_need_no_token() {
        assert_eq!(rule("/grpc.health.v1.Health/Check"), Rule::Open);
        assert_eq!(rule("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Rule::Open);
    }

    #[test]
    fn an_unknown_rpc_is_refused_to_everyone() {
        for path in ["/hive.v1.AdminService/DropEverything", "/other.Service/Call", "nonsense", ""] {
            let rule = rule(path);
            assert!(!rule.allows(Admin), "{path}");
        }
    }

    #[test]
    fn agents_may_only_take_and_release_locks_and_report_progress() {
        assert!(rule("/hive.v1.WorkerService/AcquireLock").allows(Agent));
        assert!(rule("/hive.v1.WorkerService/ReportProgress").allows(Agent));
        for method in ["Claim", "Complete", "Fail", "Register", "Heartbeat", "AppendLogs", "SaveSession", "LoadSession"]
        {
            assert!(!rule(&format!("/hive.v1.WorkerService/{method}")).allows(Agent), "{method}");
        }
        assert!(!rule("/hive.v1.AdminService/GetTask").allows(Agent));
    }
}
