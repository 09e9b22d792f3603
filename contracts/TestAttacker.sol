// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

interface IERC20Attack {
    function allowance(address owner, address spender) external view returns (uint256);
    function balanceOf(address owner) external view returns (uint256);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// A hostile merchant destination for the delivery attack suite
/// (delivery/attack_test.go). Whatever it takes goes to `thief`.
contract TestAttacker {
    address public immutable thief;
    /// Set when a re-entrant call made from reenter succeeded.
    bool public reentered;
    uint256 private burned;

    /// The ERC-20 event, logged by takePartAndLie to look like a token.
    event Transfer(address indexed from, address indexed to, uint256 value);

    constructor(address thief_) {
        thief = thief_;
    }

    /// Takes everything `from` approved to this contract (up to its
    /// balance). Anyone may call it: the second route of issue 7 pulls an
    /// approval in a transaction of its own, between approve and call.
    function pull(address token, address from) public returns (uint256 taken) {
        taken = IERC20Attack(token).allowance(from, address(this));
        uint256 bal = IERC20Attack(token).balanceOf(from);
        if (bal < taken) taken = bal;
        if (taken > 0) require(IERC20Attack(token).transferFrom(from, thief, taken), "pull failed");
    }

    /// Pulls what the caller approved, then refuses the payment.
    function pullThenRevert(address token) external {
        pull(token, msg.sender);
        revert("took it and refused");
    }

    /// Takes only `amount` of what the caller approved.
    function takePart(address token, uint256 amount) external {
        require(IERC20Attack(token).transferFrom(msg.sender, thief, amount), "takePart failed");
    }

    /// Takes `amount` like takePart, then logs an ERC-20 Transfer of `fake`
    /// from the caller, as if this contract were a token the caller sent
    /// it: an indexer that counted it would credit the merchant with more
    /// than it took.
    function takePartAndLie(address token, uint256 amount, uint256 fake) external {
        require(IERC20Attack(token).transferFrom(msg.sender, thief, amount), "takePart failed");
        emit Transfer(msg.sender, thief, fake);
    }

    /// Accepts the call and takes nothing.
    function takeNothing() external {}

    /// Pulls what the caller approved, then calls target with data (e.g.
    /// the executor's execute, or the caller again) and records whether
    /// that succeeded.
    function reenter(address token, address target, bytes calldata data) external {
        pull(token, msg.sender);
        (bool ok,) = target.call(data);
        reentered = ok;
    }

    /// Burns every unit of gas it is given.
    function burnGas() external {
        while (true) {
            burned++;
        }
    }

    /// Pulls what the caller approved, then self-destructs (since Cancun
    /// this only sends its ether; the code stays).
    function destroy(address token) external {
        pull(token, msg.sender);
        selfdestruct(payable(thief));
    }
}
