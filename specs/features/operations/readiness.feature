Feature: Readiness gates
  A pool takes work only once it is ready: its model checked, its engine started, its
  health probe passed and a one-token warm-up done. Until then jobs for it wait or are
  refused with a typed error, and the pool says why it is not ready.

  Background:
    Given a pool manager running the pool "ok" and the pool "broken" whose model file is not a model

  @POOL-02 @PLC-02
  Scenario: A pool whose engine has not finished starting takes no work until it is ready
    Given a second pool manager starts the pool "late" and its engine is held up while it starts
    Then pool "late" is not ready
    And a job pinned to pool "late" is refused with 503 "POOL_UNREADY"
    When the engine that was held up resumes
    Then pool "late" is ready
    And a job pinned to pool "late" completes

  @POOL-02 @POOL-06
  Scenario: A pool whose model file fails its check never takes work and says why
    Then pool "broken" reaches the state "failed"
    And pool "broken" reports the error "not a readable GGUF"
    And a job pinned to pool "broken" is refused with 503 "POOL_UNREADY"
    And a job for "broken-model" is refused at once with 503 "POOL_UNREADY"
    And a job pinned to pool "ok" completes

  @POOL-02 @API-09
  Scenario: Only ready pools are listed in the capabilities
    Then the capabilities list pool "ok"
    And the capabilities do not list pool "broken"
