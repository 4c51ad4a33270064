//! Two replicables that claim one registry table compile (they may live in different crates),
//! and the runtime refuses them when it starts, naming both.

use geo_runtime::{RegistrationError, ReplicatorSet};

#[geo_runtime::replicable(strategy = "blob", registry = "shared_registry")]
#[derive(Debug)]
pub struct Avatar {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

#[geo_runtime::replicable(strategy = "blob", registry = "shared_registry")]
#[derive(Debug)]
pub struct Banner {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

#[test]
fn the_runtime_refuses_two_replicators_on_one_registry_table() {
    let err = ReplicatorSet::linked().expect_err("a shared registry table must be refused");
    assert_eq!(
        err,
        RegistrationError::DuplicateTable {
            table: "shared_registry",
            first: "AvatarReplicator",
            first_role: "registry table",
            second: "BannerReplicator",
            second_role: "registry table",
        }
    );
    let message = err.to_string();
    assert!(
        message.contains("AvatarReplicator") && message.contains("BannerReplicator"),
        "{message}"
    );
}

#[test]
fn explicit_registration_refuses_them_too() {
    let err = ReplicatorSet::empty()
        .register::<AvatarReplicator>()
        .and_then(|s| s.register::<BannerReplicator>())
        .expect_err("refused");
    assert!(matches!(
        err,
        RegistrationError::DuplicateTable {
            table: "shared_registry",
            ..
        }
    ));
}

#[test]
fn an_empty_set_is_an_error_with_advice() {
    // The explicit builder starts empty; `linked()` refuses an empty binary with this message.
    assert!(ReplicatorSet::empty().is_empty());
    let message = RegistrationError::Empty.to_string();
    assert!(message.contains("use my_models as _;"), "{message}");
}
