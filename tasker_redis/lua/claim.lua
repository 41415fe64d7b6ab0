-- Lease up to ARGV[3] tasks to worker ARGV[1] for ARGV[2] ms.
return claim_tasks(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
