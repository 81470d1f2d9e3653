package rescache

// Where each row of README.md's Semantics table is checked (besides the
// model-based suites, property_test.go and fuzz_test.go, and the fault
// injection, fault_test.go, which cover every row at once):
//
//	states         TestOneBuildPerKeySharedResult, TestBuildErrorReachesAllWaitersAndIsNotCached
//	concurrency    TestBuildsOfDifferentKeysRunConcurrently, TestBuildMayUseCacheWithoutDeadlock,
//	               TestBuildWaitingForItselfFails, TestRefreshInBuildChainIsACycle, TestGetHitAllocatesNothing
//	hooks          TestCallerDoesNotRunOtherKeysHooks, TestOnEvictReturnsBeforeCloseStarts,
//	               TestSlowCloseDoesNotDelayExpiry
//	build context  TestBuildContextKeepsValuesNotCancellation, TestBuildTimeout,
//	               TestBuildTimeoutAnswersWaitersEvenIfBuildIgnoresContext,
//	               TestBuildQueuedForSlotIsFinishedWhenItsContextEnds
//	errors         TestErrorTTL, TestErrorTTLDoesNotRememberPanics, TestErrorTTLMemoryIsBounded,
//	               TestPanicBecomesPanicErrorForAllWaiters, TestGoexitInBuildAnswersWaiters,
//	               TestGoexitInInlineBuildEndsItsCaller
//	leases         TestLeaseKeepsValueOpenAcrossInvalidate, TestLeaseKeepsValueOpenAcrossEviction,
//	               TestManyLeasesCloseAtLastRelease, TestDiscardRemovesThisValueOnly,
//	               TestStaleLeaseCopyCannotReleaseAnother, TestLeasesRaceRemovals
//	invalidate     TestInvalidatePendingKey
//	eviction       TestLRUEviction, TestIdleTimeout, TestLeasedEntryIsNotIdle, TestMaxLifetime,
//	               TestLeasedEntryIsNotIdleToItsCallers, TestLeasedEntryIsNotIdleBetweenSweeps,
//	               TestHealthCheckSkipsLeasedEntries,
//	               TestExpiredEntryIsNeverReturned, TestHealthCheckEvictsUnhealthy,
//	               TestHealthCheckDoesNotHideIdleExpiry, TestDurationsAtTheirLimit,
//	               TestMaxEntriesBoundsOpenValuesUnderChurn, TestMaxEntriesBoundWithConcurrentBuildLimit,
//	               TestRoomWaitEndsAtClose (room_test.go)
//	closing        TestEveryValueClosedExactlyOnce, TestDefaultCloserUsesIOCloser,
//	               TestCloseErrorsAndPanicsAreContained, TestShutdownReturnsLateCloseErrors
//	Close          TestClose, TestShutdownWaitsForBuildsAndJanitor, TestConcurrentCloseReturnsTheFirstCloseError
//	bounds         TestMaxConcurrentBuilds, TestWaitingForBuildSlotHonoursContext,
//	               TestNestedGetOfQueuedBuildDoesNotDeadlock, TestSlotBoundHoldsWhenNestedWaitGivesUp,
//	               TestHealthChecksTakeFreeSlotsOnly, TestHostileKeys, TestSlotBoundHoldsAfterClose
//	time           TestExpiryBoundUnderCPUStarvation, TestSweepCostDoesNotGrowWithLiveEntries,
//	               TestSweepCostWithLongLeases, TestUseStampNeverMovesBack
//	refresh        TestRefreshReplacesWithoutMakingCallersWait, TestFailedRefreshKeepsTheOldValue,
//	               TestRefreshOfPendingKeyBuildsAfterIt, TestConcurrentRefreshesShareOneBuild,
//	               TestRefreshAfterServesOldValueAndRefreshesInBackground,
//	               TestLifetimeJitterSpreadsEntriesBuiltTogether, TestInvalidateDuringRefresh,
//	               TestRefreshTakesABuildSlot, TestRefreshAndStatsSentences
//	leak detection TestLeakThresholdReportsOnceWithStack, TestDroppedLeaseIsReleasedByTheRuntime,
//	               TestShutdownSaysWhichLeasesAreOut, TestShutdownReportNamesEachKeyOnce
//	stats          TestLeasedGaugeNeverNegative, TestPendingCountsBuildsUntilTheyReturn,
//	               TestBuildingGaugeAfterGoexit, TestMissCountedOnceWhenInvalidateDetachesTheBuild,
//	               TestStatsCountEachCallOnceUnderInvalidate
//	validation     TestNewValidates, TestClockResolutionIsBounded
