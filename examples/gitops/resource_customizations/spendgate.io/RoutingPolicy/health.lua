-- Health of a spendgate.io RoutingPolicy, from the status the spendgate operator writes.
-- Progressing until the operator has observed the current generation, Degraded with the
-- compiler's reason when it is not in the policy bundle, Healthy otherwise.
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
hs.status = "Healthy"
hs.message = tostring(ready.message)
return hs
