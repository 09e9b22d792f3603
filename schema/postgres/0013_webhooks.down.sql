DROP TABLE IF EXISTS webhook_attempts, webhook_deliveries, webhook_endpoints;
