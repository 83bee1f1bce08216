module icn.local/super-node-standin

go 1.24
