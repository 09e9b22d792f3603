// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// The one ERC-20 call TestMerchant makes.
interface IERC20TransferFrom {
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// Merchant destination for "delivery with calldata" tests: the payer first
/// approves this contract on the token, then calls deposit, which pulls the
/// amount from the payer (one Transfer from payer to merchant) and records it
/// against the order. depositOrRevert takes the same arguments and always
/// reverts, so a test can watch a delivery bounce.
contract TestMerchant {
    /// Amount received per order id, summed over every token.
    mapping(bytes32 => uint256) public paid;

    event Deposited(bytes32 indexed orderId, address indexed token, address indexed from, uint256 amount);

    /// Pulls `amount` of `token` from the caller, who must have approved this
    /// contract for at least that much, and credits it to `orderId`.
    function deposit(address token, uint256 amount, bytes32 orderId) external {
        require(IERC20TransferFrom(token).transferFrom(msg.sender, address(this), amount), "transferFrom failed");
        paid[orderId] += amount;
        emit Deposited(orderId, token, msg.sender, amount);
    }

    /// Same signature as deposit, but the merchant refuses every payment.
    function depositOrRevert(address, uint256, bytes32) external pure {
        revert("merchant refuses");
    }
}
