package main

import "github.com/settle-dev/settle/internal/redact"

// rpcRedactor removes the chains' RPC URLs, which carry the node
// providers' API keys, from log lines and stored errors; any other
// http(s)/ws(s) URL keeps only its scheme and host.
func rpcRedactor(cfg *fileConfig) *redact.Redactor {
	urls := make([]string, 0, len(cfg.Chains))
	for _, c := range cfg.Chains {
		urls = append(urls, c.RPCURL)
	}
	return redact.New(urls...)
}
