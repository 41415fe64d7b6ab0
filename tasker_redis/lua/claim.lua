-- Lease up to ARGV[3] tasks to worker ARGV[1] for ARGV[2] ms. ARGV[4]: the
-- worker's call number (see accept_call).
if not accept_call(ARGV[1], ARGV[4]) then
  return {}
end
return claim_tasks(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
