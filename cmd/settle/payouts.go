package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/settle-dev/settle/delivery"
	"github.com/settle-dev/settle/internal/chain"
)

// cmdPayoutsList prints the payouts the executor parked in needs_attention.
func cmdPayoutsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := commonFlags("payouts list", args, stderr, false, nil)
	if err != nil {
		return err
	}
	pg, err := openPostgres(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer pg.Close()
	list, err := delivery.ListAttention(ctx, pg)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(stdout, "no payouts need attention")
		return nil
	}
	// Chain names and token units where the config knows them; raw
	// amounts otherwise (a list must work with any config).
	reg, _ := cfg.registry()
	red := rpcRedactor(cfg) // errors stored before they were redacted
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSESSION\tKIND\tCHAIN\tAMOUNT\tSTATUS\tAGE\tREASON")
	for _, p := range list {
		chainName, amount := strconv.FormatUint(p.ChainID, 10), p.Amount.String()+" (raw)"
		if reg != nil {
			if c, ok := reg.Chain(p.ChainID); ok {
				chainName = c.Name
				if t, ok := c.Token(p.Token); ok {
					amount = chain.FormatUnits(p.Amount, t.Decimals) + " " + t.Symbol
				}
			}
		}
		status := p.Status
		if p.InFlight {
			status += " (tx in flight)"
		}
		reason := strings.Join(strings.Fields(red.String(p.Error)), " ")
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.SessionID, p.Kind, chainName, amount, status, age(p.Age), reason)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%d payout(s). `settle payouts retry -id ID -note TEXT` hands one back to the executor; "+
		"`settle payouts abandon -id ID -note TEXT` takes it out of settle's hands (its session is then settled by hand).\n", len(list))
	return nil
}

// age formats d to two units: 3d4h, 2h5m, 4m10s, 12s.
func age(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", d/time.Minute, d%time.Minute/time.Second)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// cmdPayoutsAct runs `settle payouts retry` or `settle payouts abandon`.
func cmdPayoutsAct(ctx context.Context, action string, args []string, stdout, stderr io.Writer) error {
	name := "payouts " + action
	var (
		id             int64
		note, operator string
	)
	cfg, err := commonFlags(name, args, stderr, false, func(fs *flag.FlagSet) {
		fs.Int64Var(&id, "id", 0, "payout id, as `settle payouts list` prints it (required)")
		fs.StringVar(&note, "note", "", "why: recorded in the ledger with the action (required)")
		fs.StringVar(&operator, "operator", os.Getenv("USER"), "who acts, recorded in the ledger")
	})
	if err != nil {
		return err
	}
	switch {
	case id <= 0:
		return fmt.Errorf("%s: -id is required", name)
	case strings.TrimSpace(note) == "":
		return fmt.Errorf("%s: -note is required: say why, it goes into the ledger", name)
	case strings.TrimSpace(operator) == "":
		return fmt.Errorf("%s: -operator is required ($USER is not set)", name)
	}
	pg, err := openPostgres(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer pg.Close()
	switch action {
	case "retry":
		err = delivery.Retry(ctx, pg, id, operator, note)
	case "abandon":
		err = delivery.Abandon(ctx, pg, id, operator, note)
	default:
		err = errors.New("unknown action " + action)
	}
	if err != nil {
		return err
	}
	switch action {
	case "retry":
		fmt.Fprintf(stdout, "payout %d handed back to the executor (recorded in the ledger as operator/payout_retry by %s)\n", id, operator)
	case "abandon":
		fmt.Fprintf(stdout, "payout %d abandoned (recorded in the ledger as operator/payout_abandon by %s); settle will not touch it again: "+
			"settle its session by hand, and check on chain that no transaction of it is still pending\n", id, operator)
	}
	return nil
}
