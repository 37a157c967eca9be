-- Executions in flight (queued or running) per node and tenant, so that a tenant's
-- max_executions_per_tenant holds across the fleet. Rows of nodes that are lost or whose
-- lease lapsed are not counted; a node that registers again starts from none.
CREATE TABLE fleet_executions (
    node_id TEXT   NOT NULL,
    tenant  TEXT   NOT NULL,
    running BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, tenant)
);
