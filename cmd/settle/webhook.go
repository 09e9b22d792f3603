package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/settle-dev/settle/webhook"
)

// cmdWebhookAdd is `settle webhook add`: an operator registers an endpoint
// for a merchant (the same checks as POST /v1/webhooks) and sees its
// secret once.
func cmdWebhookAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var merchant, url, events, description *string
	cfg, err := commonFlags("webhook add", args, stderr, false, func(fs *flag.FlagSet) {
		merchant = fs.String("merchant", "", "merchant id (required)")
		url = fs.String("url", "", "endpoint URL, https (required)")
		events = fs.String("events", "", "comma-separated event types (default: all)")
		description = fs.String("description", "", "a note for the merchant")
	})
	if err != nil {
		return err
	}
	if *merchant == "" || *url == "" {
		return fmt.Errorf("webhook add: -merchant and -url are required")
	}
	var types []string
	for _, t := range strings.Split(*events, ",") {
		if t = strings.TrimSpace(t); t != "" {
			types = append(types, t)
		}
	}
	pg, err := openPostgres(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer pg.Close()
	e, err := webhook.NewStore(pg, cfg.webhookPolicy()).CreateEndpoint(ctx, *merchant, *url, types, *description)
	if err != nil {
		return fmt.Errorf("webhook add: %w", err)
	}
	fmt.Fprintf(stdout, "endpoint_id: %s\nurl:         %s\nevents:      %s\nsecret:      %s\n\nThe secret verifies webhook-signature (Standard Webhooks); keep it on the merchant's server.\n",
		e.ID, e.URL, eventList(e.Events), e.Secret)
	return nil
}

// cmdWebhookList is `settle webhook list -merchant ID`.
func cmdWebhookList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var merchant *string
	var secrets *bool
	cfg, err := commonFlags("webhook list", args, stderr, false, func(fs *flag.FlagSet) {
		merchant = fs.String("merchant", "", "merchant id (required)")
		secrets = fs.Bool("secrets", false, "print the signing secrets too")
	})
	if err != nil {
		return err
	}
	if *merchant == "" {
		return fmt.Errorf("webhook list: -merchant is required")
	}
	pg, err := openPostgres(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer pg.Close()
	es, err := webhook.NewStore(pg, cfg.webhookPolicy()).EndpointsForOperator(ctx, *merchant)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tURL\tEVENTS\tSTATUS")
	for _, e := range es {
		status := "enabled"
		if !e.Enabled {
			status = "disabled: " + e.DisabledReason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.ID, e.URL, eventList(e.Events), status)
		if *secrets {
			fmt.Fprintf(tw, "\tsecret %s\t\t\n", e.Secret)
		}
	}
	return tw.Flush()
}

// cmdWebhookRm is `settle webhook rm -id ID`: the endpoint goes, with its
// pending deliveries and attempt history.
func cmdWebhookRm(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var id *string
	cfg, err := commonFlags("webhook rm", args, stderr, false, func(fs *flag.FlagSet) {
		id = fs.String("id", "", "endpoint id (required)")
	})
	if err != nil {
		return err
	}
	if *id == "" {
		return fmt.Errorf("webhook rm: -id is required")
	}
	pg, err := openPostgres(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer pg.Close()
	if err := webhook.NewStore(pg, cfg.webhookPolicy()).DeleteEndpoint(ctx, "", *id); err != nil {
		return fmt.Errorf("webhook rm %s: %w", *id, err)
	}
	fmt.Fprintf(stdout, "deleted %s\n", *id)
	return nil
}

func eventList(events []string) string {
	if len(events) == 0 {
		return "all"
	}
	return strings.Join(events, ",")
}
