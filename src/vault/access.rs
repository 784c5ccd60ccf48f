//! Who may do what. Every use case reachable from outside takes a [`Grant`], and only
//! [`Vault::authorize`] makes one: no use case runs unchecked, and every refusal is decided and
//! counted for the audit trail here, the same way for every route and every caller.

use std::collections::BTreeSet;
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
    /// The signer a signing grant is for.
    signer: Option<String>,
    /// The namespaces the caller may act in; `None`: every one (an unrestricted credential, the
    /// local operator, the vault itself). A deployment-wide use case answers within it.
    scope: Option<BTreeSet<String>>,
    /// The caller's own roles (every role for the local operator and the vault itself).
    roles: BTreeSet<Role>,
    /// Granted to a verified credential (not the local operator nor the vault itself).
    credential: bool,
}

impl Grant {
    /// What the vault itself does by policy (scheduler, first start).
    pub(crate) fn system(actor: Actor, role: Role, namespace: Option<&str>) -> Grant {
        Grant {
            actor,
            role,
            namespace: namespace.map(str::to_owned),
            signer: None,
            scope: None,
            roles: Role::ALL.into_iter().collect(),
            credential: false,
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

    /// Checks this grant is for `role` deployment-wide (a use case's own guard); the use case
    /// answers within [`Grant::covers`].
    pub(crate) fn check(&self, role: Role) -> Result<(), VaultError> {
        if self.role == role && self.namespace.is_none() {
            Ok(())
        } else {
            Err(wrong_grant())
        }
    }

    /// Checks this grant is for `role` over the whole deployment, every namespace included: what
    /// changes every namespace at once (a KEK rotation, a keystore migration) needs it.
    pub(crate) fn check_global(&self, role: Role) -> Result<(), VaultError> {
        self.check(role)?;
        match self.scope {
            None => Ok(()),
            Some(_) => Err(VaultError::Forbidden(
                "a namespace-restricted credential cannot act on the whole deployment",
            )),
        }
    }

    /// Whether the caller may see or act in namespace `ns`.
    pub(crate) fn covers(&self, ns: &str) -> bool {
        self.scope.as_ref().is_none_or(|s| s.contains(ns))
    }

    /// Whether the caller may see or act on something scoped to `namespaces` (`None`: every
    /// namespace, which only an unrestricted caller covers).
    pub(crate) fn covers_all(&self, namespaces: Option<&BTreeSet<String>>) -> bool {
        match (&self.scope, namespaces) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.is_subset(mine),
        }
    }

    /// The caller's own roles.
    pub(crate) fn roles(&self) -> &BTreeSet<Role> {
        &self.roles
    }

    /// The caller is the local operator or the vault itself, not a credential.
    pub(crate) fn is_local(&self) -> bool {
        !self.credential
    }

    /// The signer this grant is for, checked to be for `role`.
    pub fn signer(&self, role: Role) -> Result<&str, VaultError> {
        self.signer_of(&[role])
    }

    /// The signer this grant is for, checked to be for one of `roles`.
    pub fn signer_of(&self, roles: &[Role]) -> Result<&str, VaultError> {
        match &self.signer {
            Some(signer) if roles.contains(&self.role) => Ok(signer),
            _ => Err(wrong_grant()),
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
    /// Allows `caller` to act as `role` (in namespace `ns`, or deployment-wide within its
    /// namespaces), or refuses and counts the refusal. A namespace is checked first, the same way
    /// on every route: spelled without percent-escapes and matching the policy's name pattern
    /// (400); then the role and the credential's namespace scope (403); then known to the policy
    /// (404).
    pub fn authorize(
        &self,
        caller: &Caller,
        role: Role,
        ns: Option<&str>,
    ) -> Result<Grant, VaultError> {
        self.decide(caller, role, ns, false)
    }

    /// [`Vault::authorize`] for what acts on every namespace at once: a credential restricted to
    /// some namespaces is refused (403).
    pub fn authorize_global(&self, caller: &Caller, role: Role) -> Result<Grant, VaultError> {
        self.decide(caller, role, None, true)
    }

    /// [`Vault::authorize_global`] in the first of `roles` the caller holds.
    pub fn authorize_global_any(
        &self,
        caller: &Caller,
        roles: &[Role],
    ) -> Result<Grant, VaultError> {
        let held = caller
            .principal
            .as_ref()
            .and_then(|p| roles.iter().copied().find(|r| p.roles.contains(r)))
            .unwrap_or(roles[0]);
        self.decide(caller, held, None, true)
    }

    fn decide(
        &self,
        caller: &Caller,
        role: Role,
        ns: Option<&str>,
        global: bool,
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
                if global && principal.namespaces.is_some() {
                    return Err(VaultError::Forbidden(
                        "a namespace-restricted credential cannot act on the whole deployment",
                    ));
                }
            }
            match ns {
                Some(ns) if self.policy.namespace(ns).is_none() => {
                    Err(VaultError::UnknownNamespace)
                }
                _ => Ok(()),
            }
        };
        match check() {
            Ok(()) => Ok(Grant {
                actor: caller.actor.clone(),
                role,
                namespace: ns.map(str::to_owned),
                signer: None,
                scope: caller.principal.as_ref().and_then(|p| p.namespaces.clone()),
                roles: caller
                    .principal
                    .as_ref()
                    .map_or_else(|| Role::ALL.into_iter().collect(), |p| p.roles.clone()),
                credential: caller.principal.is_some(),
            }),
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

    /// Allows `caller` to act on signer `signer` in the first of `roles` it holds, or refuses
    /// and counts the refusal: a name not matching the pattern (400), no such role or a scope
    /// that does not list the signer (403), a signer the policy does not declare (404).
    pub fn authorize_signer(
        &self,
        caller: &Caller,
        roles: &[Role],
        signer: &str,
    ) -> Result<Grant, VaultError> {
        let check = || {
            if caller.escaped_path || !valid_namespace_name(signer) {
                return Err(VaultError::BadInput(format!(
                    "signer name must match {NAMESPACE_PATTERN}"
                )));
            }
            let role = match &caller.principal {
                Some(p) => {
                    let role = roles.iter().copied().find(|r| p.roles.contains(r));
                    let role = role.ok_or(VaultError::Forbidden(
                        "credential lacks the role this endpoint needs",
                    ))?;
                    if p.namespaces.as_ref().is_some_and(|s| !s.contains(signer)) {
                        return Err(VaultError::Forbidden(
                            "credential is not valid for this signer",
                        ));
                    }
                    role
                }
                None => roles[0],
            };
            if self.policy.signer(signer).is_none() {
                return Err(VaultError::UnknownSigner);
            }
            Ok(role)
        };
        match check() {
            Ok(role) => Ok(Grant {
                actor: caller.actor.clone(),
                role,
                namespace: None,
                signer: Some(signer.to_owned()),
                scope: caller.principal.as_ref().and_then(|p| p.namespaces.clone()),
                roles: caller
                    .principal
                    .as_ref()
                    .map_or_else(|| Role::ALL.into_iter().collect(), |p| p.roles.clone()),
                credential: caller.principal.is_some(),
            }),
            Err(e) => {
                let key = Refusal {
                    actor: caller.actor.who.clone(),
                    operation: format!("access.{}", roles[0].as_str()),
                    route: caller.route.clone(),
                    namespace: String::new(),
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
