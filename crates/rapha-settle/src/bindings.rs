//! Typed bindings generated from the committed artifacts (`contracts/artifacts/*.json`), so the
//! Rust side can never drift from the compiled contract.

#![allow(missing_docs, clippy::too_many_arguments)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    RaphaEscrow,
    "../../contracts/artifacts/RaphaEscrow.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    MockUSDC,
    "../../contracts/artifacts/MockUSDC.json"
);

alloy::sol!(
    #[sol(rpc)]
    interface IERC20 {
        function approve(address spender, uint256 amount) external returns (bool);
        function balanceOf(address account) external view returns (uint256);
    }
);
