// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title Rapha escrow v2: a job's USDC fee moves exactly once (invariant I7).
/// @notice The AI company deposits the exact fee for a job id, naming the hospital (one call
/// per job, or `depositBatch` for several, e.g. the rounds of a federated run, with one token
/// transfer). A deposit lives under its depositor and job id together
/// (`jobKey(depositor, jobId)`): nobody can take another account's place for a job id, so a
/// front-run deposit for the same id cannot block the real one, and a job id one account funded
/// is nothing to anyone else. The hospital's node signs an EIP-712 `Settlement` naming the job
/// id and the depositor when it settles the job; anyone may submit it. Outcomes the trainer
/// could choose after seeing data are charged like a completed job: completed (1), violated
/// (4) and trainer-failed (5) credit the hospital's payout fee * 70 / 100 (rounded down) and
/// the treasury the rest; refused (2) and failed (3) credit the depositor in full. A job nobody
/// settled is refundable (credited to its depositor) after its deadline.
///
/// Pull payments: `settle` and `refundExpired` never move tokens; they credit `owed`, and each
/// account takes what it is owed with `withdraw()`. A token-blacklisted payout, treasury or
/// depositor can therefore only freeze its own money, never another party's settlement.
///
/// Each settlement anchors the node's receipt-log size and root; a smaller size (or the same
/// size with another root) would rewrite the log's history and is refused. The node signs each
/// settlement when it submits it, over its log's head at that moment, so its own settlements
/// never go below the anchor. Not upgradeable: no proxy, no owner, no admin function; token
/// and treasury are immutable.
contract RaphaEscrow is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    bytes32 public constant SETTLEMENT_TYPEHASH = keccak256(
        "Settlement(bytes32 jobId,address depositor,uint8 outcome,bytes32 receiptDigest,address payout,uint256 fee,address token,uint64 logSize,bytes32 logRoot)"
    );
    /// The interface version: 2 = five outcomes, pull payments, batch deposits, deposits keyed
    /// by depositor and job id.
    uint8 public constant ESCROW_VERSION = 2;
    uint256 public constant HOSPITAL_PERCENT = 70;

    uint8 public constant OUTCOME_COMPLETED = 1;
    uint8 public constant OUTCOME_REFUSED = 2;
    uint8 public constant OUTCOME_FAILED = 3;
    uint8 public constant OUTCOME_VIOLATED = 4;
    uint8 public constant OUTCOME_TRAINER_FAILED = 5;

    enum Status {
        None,
        Deposited,
        Paid,
        Refunded
    }

    /// Two storage slots: (depositor, amount) and (hospital, deadline, status).
    struct Job {
        address depositor;
        uint96 amount;
        address hospital;
        uint64 deadline;
        Status status;
    }

    /// One job of a `depositBatch`.
    struct JobDeposit {
        bytes32 jobId;
        address hospital;
        uint256 amount;
        uint64 deadline;
    }

    /// The signed settlement; field order and types are the EIP-712 type string's.
    // A deliberate duplicate (issue 23): rapha-eth declares this struct again for the node that
    // signs it (`escrow_message::Settlement`, crates/rapha-eth/src/eip712.rs). The contract is
    // compiled by solc and immutable once deployed, the node by rustc, so neither can take the
    // other's; rapha-eth pins the type string, and the settlement tests have this contract
    // verify the node's signatures.
    struct Settlement {
        bytes32 jobId;
        address depositor;
        uint8 outcome;
        bytes32 receiptDigest;
        address payout;
        uint256 fee;
        address token;
        uint64 logSize;
        bytes32 logRoot;
    }

    struct Hospital {
        address signer;
        address payout;
    }

    /// One slot per node: the anchored log size and the first 24 bytes of its root (enough to
    /// refuse a same-size fork; the full root is in the `LogAnchored` event).
    struct Anchor {
        uint64 size;
        bytes24 rootPrefix;
    }

    IERC20 public immutable usdc;
    address public immutable treasury;

    /// USDC base units each account may withdraw.
    mapping(address account => uint256) public owed;

    mapping(bytes32 key => Job) private _jobs;
    mapping(address hospital => Hospital) private _hospitals;
    mapping(address node => Anchor) private _anchors;

    event HospitalRegistered(address indexed hospital, address indexed signer, address payout);
    event Deposited(
        bytes32 indexed jobId, address indexed depositor, address indexed hospital, uint256 amount, uint64 deadline
    );
    event Settled(
        bytes32 indexed jobId,
        address indexed depositor,
        uint8 outcome,
        bytes32 receiptDigest,
        address indexed node,
        uint256 hospitalAmount,
        uint256 treasuryAmount,
        uint256 refundAmount
    );
    event Refunded(bytes32 indexed jobId, address indexed depositor, uint256 amount);
    event LogAnchored(address indexed node, bytes32 indexed jobId, uint64 logSize, bytes32 logRoot);
    event Credited(address indexed account, bytes32 indexed jobId, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);

    error ZeroAddress();
    error ZeroAmount();
    error AmountTooLarge(uint256 amount);
    error HospitalNotRegistered(address hospital);
    error JobExists(address depositor, bytes32 jobId);
    error DeadlineInPast(uint64 deadline);
    error EmptyBatch();
    error JobNotOpen(bytes32 jobId, Status status);
    error BadOutcome(uint8 outcome);
    error WrongToken(address token);
    error FeeMismatch(uint256 signed, uint256 deposited);
    error PayoutMismatch(address signed, address registered);
    error BadSignature();
    error UnauthorizedSigner(address recovered, address registered);
    error LogRewrite(address node, uint64 anchoredSize, uint64 size);
    error DeadlineNotReached(uint64 deadline);
    error NothingOwed(address account);

    /// Domain version "2": a receipt's own signature (domain version "1", the settlement type
    /// without the depositor) proves the receipt and never settles anything here.
    constructor(IERC20 token, address treasury_) EIP712("Rapha", "2") {
        if (address(token) == address(0) || treasury_ == address(0)) revert ZeroAddress();
        usdc = token;
        treasury = treasury_;
    }

    /// @notice Called by a hospital's account: names the node key that signs its settlements
    /// and the address that is credited its share. May be called again to rotate either.
    function registerHospital(address signer, address payout) external {
        if (signer == address(0) || payout == address(0)) revert ZeroAddress();
        _hospitals[msg.sender] = Hospital(signer, payout);
        emit HospitalRegistered(msg.sender, signer, payout);
    }

    /// @notice Deposits `amount` USDC base units (approved beforehand) for `jobId`, as the
    /// caller's deposit. The node runs the job only if the caller is an account the hospital
    /// lets the job's publisher pay from and the request names, `amount` is exactly the agreed
    /// fee and `deadline` leaves time to run and settle it; any other deposit comes back
    /// through `refundExpired`.
    function deposit(bytes32 jobId, address hospital, uint256 amount, uint64 deadline) external nonReentrant {
        _open(jobId, hospital, amount, deadline);
        usdc.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Deposits for several jobs (each with its own hospital, amount and deadline) with
    /// one token transfer of their sum: the rounds of a federated run, one job id per round and
    /// site. All or nothing.
    function depositBatch(JobDeposit[] calldata deposits) external nonReentrant {
        uint256 n = deposits.length;
        if (n == 0) revert EmptyBatch();
        uint256 total;
        for (uint256 i; i < n; ++i) {
            JobDeposit calldata d = deposits[i];
            _open(d.jobId, d.hospital, d.amount, d.deadline);
            total += d.amount;
        }
        usdc.safeTransferFrom(msg.sender, address(this), total);
    }

    /// @notice Where the deposit of `depositor` for `jobId` lives: each account has its own
    /// place for each job id.
    function jobKey(address depositor, bytes32 jobId) public pure returns (bytes32) {
        return keccak256(abi.encode(depositor, jobId));
    }

    function _open(bytes32 jobId, address hospital, uint256 amount, uint64 deadline) private {
        if (amount == 0) revert ZeroAmount();
        if (amount > type(uint96).max) revert AmountTooLarge(amount);
        if (_hospitals[hospital].payout == address(0)) revert HospitalNotRegistered(hospital);
        if (deadline <= block.timestamp) revert DeadlineInPast(deadline);
        Job storage job = _jobs[jobKey(msg.sender, jobId)];
        if (job.status != Status.None) revert JobExists(msg.sender, jobId);

        job.depositor = msg.sender;
        job.amount = uint96(amount);
        job.hospital = hospital;
        job.deadline = deadline;
        job.status = Status.Deposited;
        emit Deposited(jobId, msg.sender, hospital, amount, deadline);
    }

    /// @notice Settles the deposit of `s.depositor` for `s.jobId` with its node's signature
    /// (65 bytes r || s || v) over the EIP-712 `Settlement`. Anyone may submit it; the money is
    /// credited only where the signed and registered data say. Moves no tokens.
    function settle(Settlement calldata s, bytes calldata signature) external nonReentrant {
        Job storage job = _jobs[jobKey(s.depositor, s.jobId)];
        Status status = job.status;
        if (status != Status.Deposited) revert JobNotOpen(s.jobId, status);
        uint8 outcome = s.outcome;
        if (outcome < OUTCOME_COMPLETED || outcome > OUTCOME_TRAINER_FAILED) revert BadOutcome(outcome);
        if (s.token != address(usdc)) revert WrongToken(s.token);
        uint256 amount = job.amount;
        if (s.fee != amount) revert FeeMismatch(s.fee, amount);
        Hospital memory h = _hospitals[job.hospital];
        if (s.payout != h.payout) revert PayoutMismatch(s.payout, h.payout);

        (address node, ECDSA.RecoverError err,) = ECDSA.tryRecover(_settlementDigest(s), signature);
        if (err != ECDSA.RecoverError.NoError) revert BadSignature();
        if (node != h.signer) revert UnauthorizedSigner(node, h.signer);

        Anchor memory anchor = _anchors[node];
        bytes24 rootPrefix = bytes24(s.logRoot);
        if (s.logSize < anchor.size || (s.logSize == anchor.size && anchor.size != 0 && rootPrefix != anchor.rootPrefix))
        {
            revert LogRewrite(node, anchor.size, s.logSize);
        }
        if (s.logSize != anchor.size || rootPrefix != anchor.rootPrefix) {
            _anchors[node] = Anchor(s.logSize, rootPrefix);
        }
        emit LogAnchored(node, s.jobId, s.logSize, s.logRoot);

        if (outcome == OUTCOME_REFUSED || outcome == OUTCOME_FAILED) {
            job.status = Status.Refunded;
            emit Settled(s.jobId, s.depositor, outcome, s.receiptDigest, node, 0, 0, amount);
            emit Refunded(s.jobId, s.depositor, amount);
            _credit(s.depositor, s.jobId, amount);
        } else {
            job.status = Status.Paid;
            uint256 toHospital = amount * HOSPITAL_PERCENT / 100;
            uint256 toTreasury = amount - toHospital;
            emit Settled(s.jobId, s.depositor, outcome, s.receiptDigest, node, toHospital, toTreasury, 0);
            _credit(h.payout, s.jobId, toHospital);
            _credit(treasury, s.jobId, toTreasury);
        }
    }

    /// @notice Credits `depositor` its deposit for `jobId` once the deadline has passed and
    /// nobody settled it. Anyone may call it; the money is credited only to the depositor.
    /// Moves no tokens.
    function refundExpired(address depositor, bytes32 jobId) external nonReentrant {
        Job storage job = _jobs[jobKey(depositor, jobId)];
        Status status = job.status;
        if (status != Status.Deposited) revert JobNotOpen(jobId, status);
        uint64 deadline = job.deadline;
        if (block.timestamp <= deadline) revert DeadlineNotReached(deadline);
        job.status = Status.Refunded;
        uint256 amount = job.amount;
        emit Refunded(jobId, depositor, amount);
        _credit(depositor, jobId, amount);
    }

    /// @notice Sends the caller everything it is owed.
    function withdraw() external nonReentrant {
        uint256 amount = owed[msg.sender];
        if (amount == 0) revert NothingOwed(msg.sender);
        owed[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        usdc.safeTransfer(msg.sender, amount);
    }

    function _credit(address account, bytes32 jobId, uint256 amount) private {
        if (amount == 0) return;
        owed[account] += amount;
        emit Credited(account, jobId, amount);
    }

    /// @notice The deposit of `depositor` for `jobId` (status `None` if it made none).
    function jobOf(address depositor, bytes32 jobId) external view returns (Job memory) {
        return _jobs[jobKey(depositor, jobId)];
    }

    function hospitalOf(address account) external view returns (Hospital memory) {
        return _hospitals[account];
    }

    function anchorOf(address node) external view returns (Anchor memory) {
        return _anchors[node];
    }

    /// @notice The EIP-712 digest a node signs for these settlement fields.
    function settlementDigest(Settlement calldata s) external view returns (bytes32) {
        return _settlementDigest(s);
    }

    function _settlementDigest(Settlement calldata s) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(SETTLEMENT_TYPEHASH, s)));
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }
}
