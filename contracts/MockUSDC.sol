// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title Test-only 6-decimal USDC stand-in. Anyone may mint and blacklist: never deploy
/// outside a test chain.
/// @notice Like Circle's USDC, a blacklisted address can neither send nor receive: every
/// transfer, mint or burn from or to it reverts, and so does a `transferFrom` a blacklisted
/// spender initiates. Tests use it to show that one frozen address cannot block anyone else's
/// settlement.
contract MockUSDC is ERC20 {
    mapping(address account => bool) private _blacklisted;

    event Blacklisted(address indexed account);
    event UnBlacklisted(address indexed account);

    error AccountBlacklisted(address account);

    constructor() ERC20("Mock USD Coin", "mUSDC") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function blacklist(address account) external {
        _blacklisted[account] = true;
        emit Blacklisted(account);
    }

    function unBlacklist(address account) external {
        _blacklisted[account] = false;
        emit UnBlacklisted(account);
    }

    function isBlacklisted(address account) external view returns (bool) {
        return _blacklisted[account];
    }

    function _update(address from, address to, uint256 value) internal override {
        if (_blacklisted[from]) revert AccountBlacklisted(from);
        if (_blacklisted[to]) revert AccountBlacklisted(to);
        if (_blacklisted[msg.sender]) revert AccountBlacklisted(msg.sender);
        super._update(from, to, value);
    }
}
