// Package chain holds the small, dependency-light vocabulary shared by every
// part of settle that talks about on-chain values: token amounts in decimal
// and smallest-unit form, EVM addresses, and hex-encoded call data.
//
// Parsers here are strict on purpose. They sit on the boundary where
// untrusted API input becomes money, so anything ambiguous (signs,
// exponents, rounding, unchecked mixed-case addresses) is rejected rather
// than guessed at.
package chain
