//! Who may do what. Every use case reachable from outside takes a [`Grant`], and only
//! [`Vault::authorize`] makes one: no use case runs unchecked, and every refusal is decided and
//! counted for the audit trail here, the same way for every route and every caller.

use std::sync::Arc;

use super::{Actor, Principal, Refusal, Role, Vault, VaultError};
use crate::policy::{valid_namespace_name, NAMESPACE_PATTERN};

/// Who is asking, and through which door.
pub struct Caller {
    /// `None`: the local operator (the CLI), whose authority is access to the deployment's
    /// configuration and keystore.
    principal: Option<Arc<Principal>>,
    actor: Actor,
    /// The door, for counting refusals: a route pattern (bounded by the route table).
    route: String,
    /// The request spelled its path with percent-escapes, which no valid namespace or record
    /// name needs (one spelling per name; `%00` would decode to NUL).
    escaped_path: bool,
}

impl Caller {
    /// A verified credential's request.
    pub fn credential(
        principal: Arc<Principal>,
        request_id: String,
        route: String,
        escaped_path: bool,
    ) -> Caller {
        Caller {
            actor: Actor::request(principal.id.clone(), request_id),
            principal: Some(principal),
            route,
            escaped_path,
        }
    }

    /// The local operator: an operator tool on the deployment's own configuration.
    pub fn local(actor: Actor) -> Caller {
        Caller {
            principal: None,
            actor,
            route: "local".into(),
            escaped_path: false,
        }
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }
}

/// Permission for one role, in one namespace or deployment-wide, to whoever the actor is.
/// Not `Clone`, not constructible outside the vault.
pub struct Grant {
    actor: Actor,
    role: Role,
    namespace: Option<String>,
}

impl Grant {
    /// What the vault itself does by policy (scheduler, first start).
    pub(crate) fn system(actor: Actor, role: Role, namespace: Option<&str>) -> Grant {
        Grant {
            actor,
            role,
            namespace: namespace.map(str::to_owned),
        }
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The actor for an audit entry of `what`: an API request's entry says it came through
    /// the API; an operator tool's keeps its own reason.
    pub(crate) fn actor_for(&self, what: &str) -> Actor {
        let mut actor = self.actor.clone();
        if actor.why.is_empty() {
            actor.why = format!("{what} requested through the API");
        }
        actor
    }

    /// Checks this grant is for `role` deployment-wide (a use case's own guard).
    pub(crate) fn check(&self, role: Role) -> Result<(), VaultError> {
        if self.role == role {
            Ok(())
        } else {
            Err(wrong_grant())
        }
    }

    /// The namespace this grant is for, checked to be for `role`.
    pub fn namespace(&self, role: Role) -> Result<&str, VaultError> {
        match &self.namespace {
            Some(ns) if self.role == role => Ok(ns),
            _ => Err(wrong_grant()),
        }
    }
}

/// A use case handed a grant for something else: a wiring mistake, refused as forbidden.
fn wrong_grant() -> VaultError {
    VaultError::Forbidden("credential lacks the role this endpoint needs")
}

impl Vault {
    /// Allows `caller` to act as `role` (in namespace `ns`, or deployment-wide), or refuses and
    /// counts the refusal. A namespace is checked first, the same way on every route: spelled
    /// without percent-escapes and matching the policy's name pattern (400); then the role and
    /// the credential's namespace scope (403); then known to the policy (404).
    pub fn authorize(
        &self,
        caller: &Caller,
        role: Role,
        ns: Option<&str>,
    ) -> Result<Grant, VaultError> {
        let check = || {
            if let Some(ns) = ns {
                if caller.escaped_path {
                    return Err(VaultError::BadInput(
                        "percent-encoding is not allowed in namespace and record paths".into(),
                    ));
                }
                if !valid_namespace_name(ns) {
                    return Err(VaultError::BadInput(format!(
                        "namespace must match {NAMESPACE_PATTERN}"
                    )));
                }
            }
            if let Some(principal) = &caller.principal {
                principal.require(role, ns)?;
            }
            match ns {
                Some(ns) if self.policy.namespace(ns).is_none() => {
                    Err(VaultError::UnknownNamespace)
                }
                _ => Ok(()),
            }
        };
        match check() {
            Ok(()) => Ok(Grant::system(caller.actor.clone(), role, ns)),
            Err(e) => {
                let key = Refusal {
                    actor: caller.actor.who.clone(),
                    operation: format!("access.{}", role.as_str()),
                    route: caller.route.clone(),
                    namespace: self.known_namespace(ns),
                    outcome: e.code(),
                };
                self.record_refusal(key, &caller.actor.request_id);
                Err(e)
            }
        }
    }

    /// `ns` if it is a namespace of the policy, else nothing: only those may key a refusal.
    pub fn known_namespace(&self, ns: Option<&str>) -> String {
        ns.filter(|ns| self.policy.namespace(ns).is_some())
            .unwrap_or_default()
            .to_owned()
    }
}
