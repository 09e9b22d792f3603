// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Minimal ERC-20 used to generate a large, deterministic Transfer history.
/// `spray(seed, n)` emits n Transfer events in one tx:
///   Transfer(from = address(this), to = address(uint160(seed + i)), value = i + 1), i = 0..n-1
/// (event-only: balances are not touched by spray, so it's cheap: ~1.9k gas/event).
contract BenchToken {
    string public constant name = "BenchToken";
    string public constant symbol = "BENCH";
    uint8 public constant decimals = 18;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor(uint256 supply) {
        totalSupply = supply;
        balanceOf[msg.sender] = supply;
        emit Transfer(address(0), msg.sender, supply);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        balanceOf[msg.sender] -= value;
        balanceOf[to] += value;
        emit Transfer(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        allowance[from][msg.sender] -= value;
        balanceOf[from] -= value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
        return true;
    }

    function spray(uint256 seed, uint256 n) external {
        for (uint256 i = 0; i < n; ) {
            emit Transfer(address(this), address(uint160(seed + i)), i + 1);
            unchecked { ++i; }
        }
    }
}
