-- Health of a spendgate.io Budget, from the status the spendgate operator writes.
-- Progressing until the operator has observed the current generation, Degraded with the
-- compiler's reason when it is not in the policy bundle, Suspended when it only records what it
-- would do (enforcement DryRun), Healthy otherwise, with the spend of the current window.
local hs = {}
local generation = obj.metadata.generation or 0
if obj.status == nil or obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the spendgate operator to observe generation " .. tostring(generation)
  return hs
end
local ready = nil
for _, condition in ipairs(obj.status.conditions or {}) do
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Waiting for the spendgate operator to compile the policy bundle"
  return hs
end
if ready.status ~= "True" then
  hs.status = "Degraded"
  hs.message = tostring(ready.reason) .. ": " .. tostring(ready.message)
  return hs
end
local spend = ""
if obj.status.state ~= nil then
  spend = ": " .. obj.status.state .. ", $" .. tostring(obj.status.spentUSD) .. " of $" .. tostring(obj.spec.limitUSD) ..
    " (" .. tostring(obj.status.percentUsed) .. ") in window " .. tostring(obj.status.window)
end
if obj.spec.enforcement == "DryRun" then
  hs.status = "Suspended"
  hs.message = "DryRun: decisions are recorded, traffic is never downgraded or paused" .. spend
  return hs
end
hs.status = "Healthy"
hs.message = "Enforced" .. spend
return hs
