//! For the tests that run `refbus adapter` without a `refbus router` process: the one thing a
//! router's start does that an adapter's start needs.

use std::path::Path;

/// Does what `refbus router` does first, with the router key in `keys` (made with `refbus keys
/// generate-router` if missing, so that the adapters' `--public-keys` lists it): creates the
/// events stream if missing, checks it, and stores the router's signed statement of it, without
/// which an adapter refuses to start (its user may not read the stream's settings).
pub(crate) async fn check_stream_as_the_router(nats_url: &str, keys: &Path) {
    let key_file = keys.join("router.sign.key");
    if !key_file.exists() {
        super::refbus_ok(&[
            "keys",
            "generate-router",
            "--out",
            &keys.display().to_string(),
        ]);
    }
    let key =
        refbus_seal::signing::read_signing_key(&key_file, refbus_core::signature::Signer::Router)
            .unwrap();
    refbus_bus::Bus::connect_attesting(nats_url, &refbus_bus::StreamSettings::default(), &key)
        .await
        .unwrap();
}
