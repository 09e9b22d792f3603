// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// The ERC-20 calls a runner makes. Return values are read leniently (see
/// PayoutRunner._token): USDT and other old tokens return nothing.
interface IERC20Min {
    function balanceOf(address owner) external view returns (uint256);
    function approve(address spender, uint256 amount) external returns (bool);
    function transfer(address to, uint256 amount) external returns (bool);
}

/// SettleExecutor runs a merchant's calldata for one payout without the
/// treasury's authority.
///
/// The invariant: the code that runs merchant calldata can reach at most the
/// funds of the payout it executes. Nothing of the treasury's (the treasury
/// is an EOA and grants no allowance to anyone), no other payout's (each
/// payout has its own runner address), no standing allowance (the runner
/// approves the destination for the payout's amount and revokes it in the
/// same transaction).
///
/// A payout takes two treasury transactions:
///   1. a plain ERC-20 transfer of the amount to runnerAddress(...), an
///      address with no code. Nobody can move funds from it: it has no key
///      and no code, so it can grant no approval.
///   2. execute(...), which CREATE2-deploys a PayoutRunner at that address.
///      The runner's constructor approves the destination, calls it with
///      the merchant's calldata, revokes the approval, sends every unit the
///      call did not take back to the treasury and emits Executed. The
///      runner then deploys no code, so the address can never act again.
///
/// The runner address commits to every argument (they are in the CREATE2
/// init code), so funds sent for one payout can only ever run that payout's
/// call, exactly once (a second CREATE2 at the same address fails).
/// If the merchant's call reverts, its effects (including any transferFrom
/// it made) are undone by the EVM and the whole amount returns to the
/// treasury in the same transaction: a payout is either delivered or
/// returned, never both.
contract SettleExecutor {
    /// The only account that may execute payouts, and where every unit a
    /// call does not take is returned. Kept in storage, not immutable, so the
    /// deployed code is the same for every treasury and settle can check it
    /// byte for byte.
    address public treasury;

    error NotTreasury();

    constructor(address treasury_) {
        treasury = treasury_;
    }

    /// Where the treasury sends a payout's amount before execute. payoutKey
    /// is unique per payout across every settle installation that shares
    /// this executor (settle hashes the session id into it), so two payouts
    /// can never share a runner address.
    function runnerAddress(
        bytes32 payoutKey,
        address token,
        uint256 amount,
        address target,
        bytes calldata data,
        uint256 callGas
    ) external view returns (address) {
        bytes32 initHash = keccak256(
            abi.encodePacked(type(PayoutRunner).creationCode, abi.encode(token, amount, target, data, callGas, treasury))
        );
        return address(uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), payoutKey, initHash)))));
    }

    /// Runs the funded payout. Only the treasury may call it: anyone else
    /// could run a payout early with too little gas and make it bounce.
    function execute(
        bytes32 payoutKey,
        address token,
        uint256 amount,
        address target,
        bytes calldata data,
        uint256 callGas
    ) external {
        if (msg.sender != treasury) revert NotTreasury();
        new PayoutRunner{salt: payoutKey}(token, amount, target, data, callGas, treasury);
    }
}

/// PayoutRunner does all its work in its constructor and leaves no code
/// behind. While it runs, its address has no code either, so a call back
/// into it does nothing.
contract PayoutRunner {
    /// Gas kept back for what follows the merchant's call: the revoke, the
    /// balance read, the return transfer and the event. A standard ERC-20
    /// needs under 50k for the three calls.
    uint256 private constant RESERVE = 120_000;
    /// At most this much of the call's return (or revert) data is copied,
    /// so a huge return cannot eat the reserve.
    uint256 private constant MAX_RESULT = 256;

    /// success: the call did not revert. delivered: units of token that
    /// left the runner during the call. returned: units sent back to the
    /// treasury. result: the first MAX_RESULT bytes of the call's return or
    /// revert data.
    event Executed(bool success, uint256 delivered, uint256 returned, bytes result);

    error NotFunded(uint256 balance, uint256 amount);
    error NotEnoughGas(uint256 left, uint256 needed);
    error TokenCallFailed(bytes4 selector);

    constructor(address token, uint256 amount, address target, bytes memory data, uint256 callGas, address treasury) {
        uint256 before = IERC20Min(token).balanceOf(address(this));
        if (before < amount) revert NotFunded(before, amount);
        _token(token, abi.encodeCall(IERC20Min.approve, (target, amount)));
        // EIP-150 forwards at most 63/64 of what is left: insist that the
        // call gets all of callGas, so a gas estimate (or a low gas limit)
        // can never starve a good merchant call into a bounce.
        uint256 needed = callGas + callGas / 63 + RESERVE;
        if (gasleft() < needed) revert NotEnoughGas(gasleft(), needed);
        bool ok;
        uint256 size;
        bytes memory result = new bytes(MAX_RESULT);
        assembly {
            ok := call(callGas, target, 0, add(data, 0x20), mload(data), add(result, 0x20), MAX_RESULT)
            size := returndatasize()
            if gt(size, MAX_RESULT) { size := MAX_RESULT }
            mstore(result, size)
        }
        _token(token, abi.encodeCall(IERC20Min.approve, (target, 0)));
        uint256 left = IERC20Min(token).balanceOf(address(this));
        if (left > 0) _token(token, abi.encodeCall(IERC20Min.transfer, (treasury, left)));
        uint256 delivered = before > left ? before - left : 0;
        emit Executed(ok, delivered, left, result);
        assembly {
            return(0, 0) // deploy no code: the address can never act again
        }
    }

    /// Calls token with data and requires success with either no return
    /// data or an ABI-encoded true.
    function _token(address token, bytes memory data) private {
        (bool ok, bytes memory ret) = token.call(data);
        if (!ok || (ret.length != 0 && (ret.length < 32 || abi.decode(ret, (uint256)) != 1)) || token.code.length == 0) {
            revert TokenCallFailed(bytes4(data));
        }
    }
}
