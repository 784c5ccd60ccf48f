//! The KEK lifecycle, decided here once for both keystores: `active` → `retired` → `destroyed`,
//! at most one active, version numbers never reused.
//!
//! The keystores only record the outcome: the soft keystore in its table, the PKCS#11 keystore
//! in token objects (`CKA_ENCRYPT` false once retired, so the HSM itself refuses to wrap; the key
//! object deleted once destroyed).

use super::{KekInfo, KekState, KeystoreError};

/// What a caller asks of a KEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Wrap,
    Unwrap,
    Retire,
    Destroy,
}

/// Whether `op` may run on KEK `version`, found in `state` (`None`: no such version). On success,
/// the state the KEK is in afterwards; otherwise [`KeystoreError::UnknownVersion`], or
/// [`KeystoreError::State`] naming the state that forbids it.
pub(super) fn check(
    op: Op,
    version: u32,
    state: Option<KekState>,
) -> Result<KekState, KeystoreError> {
    use KekState::{Active, Destroyed, Retired};
    let state = state.ok_or(KeystoreError::UnknownVersion(version))?;
    match (op, state) {
        (Op::Wrap, Active) | (Op::Unwrap, Active | Retired) => Ok(state),
        (Op::Retire, Active) => Ok(Retired),
        // Never the active KEK: it must be retired (and rewrapped away from) first.
        (Op::Destroy, Retired) => Ok(Destroyed),
        _ => Err(KeystoreError::State { version, state }),
    }
}

/// The version a new KEK takes: one above every version `used` (destroyed ones included) and
/// above `floor`, so no number is ever reused.
pub(super) fn next_version(
    used: impl IntoIterator<Item = u32>,
    floor: u32,
) -> Result<u32, KeystoreError> {
    used.into_iter()
        .max()
        .unwrap_or(0)
        .max(floor)
        .checked_add(1)
        .ok_or_else(|| KeystoreError::Config("KEK versions exhausted".into()))
}

/// The active versions to retire so that only the newest stays active, in ascending order.
pub(super) fn superseded(keks: impl IntoIterator<Item = KekInfo>) -> Vec<u32> {
    let mut actives: Vec<u32> = keks
        .into_iter()
        .filter(|k| k.state == KekState::Active)
        .map(|k| k.version)
        .collect();
    actives.sort_unstable();
    actives.pop();
    actives
}

#[cfg(test)]
mod tests {
    use super::*;
    use KekState::{Active, Destroyed, Retired};

    fn refused_in(r: Result<KekState, KeystoreError>) -> KekState {
        match r {
            Err(KeystoreError::State { version: 7, state }) => state,
            other => panic!("expected State for version 7, got {other:?}"),
        }
    }

    #[test]
    fn each_state_allows_only_its_operations() {
        assert_eq!(check(Op::Wrap, 7, Some(Active)).unwrap(), Active);
        assert_eq!(check(Op::Unwrap, 7, Some(Active)).unwrap(), Active);
        assert_eq!(check(Op::Unwrap, 7, Some(Retired)).unwrap(), Retired);
        assert_eq!(check(Op::Retire, 7, Some(Active)).unwrap(), Retired);
        assert_eq!(check(Op::Destroy, 7, Some(Retired)).unwrap(), Destroyed);
        for (op, state) in [
            (Op::Wrap, Retired),
            (Op::Retire, Retired),
            (Op::Destroy, Active),
            (Op::Wrap, Destroyed),
            (Op::Unwrap, Destroyed),
            (Op::Retire, Destroyed),
            (Op::Destroy, Destroyed),
        ] {
            assert_eq!(refused_in(check(op, 7, Some(state))), state, "{op:?}");
        }
    }

    #[test]
    fn an_unknown_version_is_refused_for_every_operation() {
        for op in [Op::Wrap, Op::Unwrap, Op::Retire, Op::Destroy] {
            assert!(matches!(
                check(op, 7, None),
                Err(KeystoreError::UnknownVersion(7))
            ));
        }
    }

    #[test]
    fn versions_count_up_from_the_highest_used_or_the_floor() {
        assert_eq!(next_version([], 0).unwrap(), 1);
        assert_eq!(next_version([3, 1, 2], 0).unwrap(), 4);
        assert_eq!(next_version([3, 1, 2], 10).unwrap(), 11);
        assert_eq!(next_version([30], 10).unwrap(), 31);
        assert!(matches!(
            next_version([u32::MAX], 0),
            Err(KeystoreError::Config(_))
        ));
        assert!(matches!(
            next_version([], u32::MAX),
            Err(KeystoreError::Config(_))
        ));
    }

    #[test]
    fn only_the_newest_active_survives() {
        let info = |version, state| KekInfo { version, state };
        assert!(superseded([]).is_empty());
        assert!(superseded([info(1, Retired), info(2, Active)]).is_empty());
        assert_eq!(
            superseded([
                info(5, Active),
                info(1, Active),
                info(2, Destroyed),
                info(3, Active),
                info(4, Retired),
            ]),
            vec![1, 3]
        );
    }
}
