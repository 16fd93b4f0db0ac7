Feature: Draining and reloading a pool
  An operator takes a pool out of service without cutting off the work it is doing,
  puts it back into service, and swaps the model a pool serves without a gap in service.
  One pool manager runs the pools "d1" (model alias "default"), "d2" (alias "other") and
  "rl" (alias "reloadable"), each with the tiny fixture model on the in-process engine.

  Background:
    Given a pool manager running the pools "d1", "d2" and "rl"

  @POOL-05 @API-11
  Scenario: A drained pool finishes its running job, then stops and takes no new work
    Given a long job is streaming on pool "d1"
    When the operator drains pool "d1" with a deadline of 600000 ms
    Then pool "d1" is not ready
    And the long job ends normally with all its tokens
    And pool "d1" reaches the state "stopped"
    And a job pinned to pool "d1" is refused with 503 "POOL_UNREADY"
    And a job for "default" is refused at once with 503 "POOL_UNREADY"
    And a job pinned to pool "d2" completes

  @POOL-05 @API-11
  Scenario: Undoing a drain after the engine stopped starts a fresh engine that serves
    Given the operator drains pool "d1" with a deadline of 0 ms
    And pool "d1" reaches the state "stopped"
    When the operator undoes the drain of pool "d1"
    Then pool "d1" is ready
    And a job pinned to pool "d1" completes

  @POOL-05 @API-11
  Scenario: Undoing a drain while it waits for a running job keeps the same engine
    Given a long job is streaming on pool "d1"
    When the operator drains pool "d1" with a deadline of 600000 ms
    Then pool "d1" is not ready
    When the operator undoes the drain of pool "d1"
    Then pool "d1" is ready
    And the long job ends normally with all its tokens
    And pool "d1" is served by the same engine process as before

  @POOL-05 @CLI-03
  Scenario: The operator drains a pool and puts it back from the command line
    When the operator runs "llorch pools drain d1 --deadline-ms 0"
    Then the command succeeds
    And pool "d1" reaches the state "stopped"
    When the operator runs "llorch pools undrain d1"
    Then the command succeeds
    And pool "d1" is ready
    When the operator runs "llorch pools show d1 --json"
    Then the command shows the pool "d1" in the state "ready"

  @POOL-05 @API-11
  Scenario: A reload swaps the model while the running job completes on the old one
    Given a long job is streaming on pool "rl"
    And the engine of pool "rl" is held up mid-stream
    When the operator reloads pool "rl" with the second model
    Then the reload answers that pool "rl" serves the second model
    And the long job had not ended when the reload answered
    When the engine that was held up resumes
    Then the long job ends normally with all its tokens
    And the long job was served by the first model
    And a job for "reloadable" is served by the second model

  @POOL-05 @API-11
  Scenario: A reload to a file that is not a model is rolled back with the reason
    When the operator reloads pool "rl" with a file that is not a model
    Then the reload is refused with 422 "RELOAD_FAILED" saying "not a readable GGUF"
    And pool "rl" is ready
    And a job for "reloadable" is served by the model it served before the reload
