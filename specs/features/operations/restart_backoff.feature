Feature: Restarting crashed engines with back-off
  An engine that crashes is restarted after a delay that grows with each crash; an
  engine that keeps crashing is given up: its pool is marked failed with the reason.
  The pool manager here restarts after 0.2 s, doubling, with no jitter, and gives up
  when an engine crashes more than 3 times within its crash window.

  Background:
    Given a pool manager with a restart back-off of 0.2 s doubling, giving up after more than 3 crashes

  @POOL-04 @POOL-03
  Scenario: An engine that keeps crashing is restarted with growing delays and ends failed
    Given a pool "crashy" whose engine cannot load its model
    Then pool "crashy" reaches the state "failed"
    And the pool manager narrated restarts of pool "crashy" in 0.20, 0.40 and 0.80 s
    And pool "crashy" reports the error "crash loop: 4 crashes"
    And pool "crashy" counts 3 restarts
    And a job pinned to pool "crashy" is refused with 503 "POOL_UNREADY"

  @POOL-04 @REL-02
  Scenario: An engine killed mid-stream is restarted after a back-off and serves again
    Given a long job is streaming on pool "steady"
    When the engine of pool "steady" is killed
    Then the long job ends with the retriable error "WORKER_RESET"
    And pool "steady" is ready again after a restart
    And the pool manager narrated a restart of pool "steady" in 0.20 s
    And a job pinned to pool "steady" completes
