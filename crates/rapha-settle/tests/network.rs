//! Network configuration: the RPC's chain id and the token are checked before any use.

use alloy::primitives::Address;
use rapha_settle::network::{NetworkConfig, AMOY_USDC, POLYGON_USDC};
use rapha_settle::{SettleError, TokenKind};

use crate::anvil::AnvilOptions;

fn cfg(chain_id: u64, token: Address, test_token: bool, rpc_url: String) -> NetworkConfig {
    NetworkConfig {
        chain_id,
        rpc_url,
        escrow: Address::repeat_byte(1),
        token,
        test_token,
    }
}

#[test]
fn only_official_usdc_is_accepted_unless_test_token_is_set() {
    let none = String::new();
    assert_eq!(
        cfg(137, POLYGON_USDC, false, none.clone())
            .check_token()
            .unwrap(),
        TokenKind::Official
    );
    assert_eq!(
        cfg(80002, AMOY_USDC, false, none.clone())
            .check_token()
            .unwrap(),
        TokenKind::Official
    );
    assert!(cfg(137, POLYGON_USDC, false, none.clone()).is_production());
    assert!(!cfg(80002, AMOY_USDC, false, none.clone()).is_production());

    let fake = Address::repeat_byte(0x66);
    let err = cfg(137, fake, false, none.clone())
        .check_token()
        .unwrap_err();
    assert!(
        matches!(err, SettleError::UnofficialToken { chain_id: 137, configured, official } if configured == fake && official == POLYGON_USDC),
        "{err}"
    );
    // Amoy's token on mainnet is not official either.
    assert!(cfg(137, AMOY_USDC, false, none.clone())
        .check_token()
        .is_err());
    assert!(matches!(
        cfg(31337, fake, false, none.clone()).check_token(),
        Err(SettleError::NoOfficialToken { chain_id: 31337 })
    ));

    let test = cfg(137, fake, true, none);
    assert_eq!(test.check_token().unwrap(), TokenKind::Test);
    assert!(!test.is_production(), "a test token is never production");
}

#[test]
fn config_parses_from_toml_like_json_and_refuses_unknown_fields() {
    let ok: NetworkConfig = serde_json::from_str(&format!(
        r#"{{"chain_id":137,"rpc_url":"https://polygon-rpc.invalid","escrow":"0x{}","token":"{POLYGON_USDC}"}}"#,
        "11".repeat(20)
    ))
    .unwrap();
    assert!(!ok.test_token);
    let bad = serde_json::from_str::<NetworkConfig>(
        r#"{"chain_id":137,"rpc_url":"x","escrow":"0x1111111111111111111111111111111111111111","token":"0x1111111111111111111111111111111111111111","testtoken":true}"#,
    );
    assert!(
        bad.is_err(),
        "a misspelt test_token must not silently mean false"
    );
}

#[tokio::test]
async fn an_rpc_reporting_another_chain_id_is_refused() {
    let Some(amoy_like) = crate::anvil::start(AnvilOptions {
        chain_id: 80002,
        ..AnvilOptions::default()
    }) else {
        return;
    };
    let polygon_cfg = cfg(137, POLYGON_USDC, false, amoy_like.rpc_url());
    let err = polygon_cfg.connect().await.unwrap_err();
    assert!(
        matches!(
            err,
            SettleError::ChainIdMismatch {
                expected: 137,
                actual: 80002
            }
        ),
        "{err}"
    );

    let amoy_cfg = cfg(80002, AMOY_USDC, false, amoy_like.rpc_url());
    let (_provider, kind) = amoy_cfg.connect().await.unwrap();
    assert_eq!(kind, TokenKind::Official);
}
