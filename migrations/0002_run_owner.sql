-- Which process runs a run: opening the store marks a run left `running` as `interrupted` only when
-- its process is gone (a `sync` started beside a running daemon must not relabel the daemon's run).
ALTER TABLE runs ADD COLUMN pid INTEGER;
ALTER TABLE runs ADD COLUMN host TEXT;
