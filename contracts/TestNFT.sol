// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Minimal ERC-721-style token for tests. Its Transfer event has the same
/// signature hash as ERC-20's but indexes tokenId (4 topics, empty data);
/// the indexer must tell the two apart, and this contract lets tests check that.
contract TestNFT {
    string public constant name = "TestNFT";
    string public constant symbol = "TNFT";
    mapping(uint256 => address) public ownerOf;
    mapping(address => uint256) public balanceOf;

    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);

    function mint(address to, uint256 id) external {
        require(to != address(0), "mint to zero address");
        require(ownerOf[id] == address(0), "already minted");
        ownerOf[id] = to;
        balanceOf[to] += 1;
        emit Transfer(address(0), to, id);
    }

    function transferFrom(address from, address to, uint256 id) external {
        require(ownerOf[id] == from && from == msg.sender, "not owner");
        require(to != address(0), "transfer to zero address");
        ownerOf[id] = to;
        balanceOf[from] -= 1;
        balanceOf[to] += 1;
        emit Transfer(from, to, id);
    }
}
