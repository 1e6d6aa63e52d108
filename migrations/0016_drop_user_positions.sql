-- Consistency tokens now name the write itself (aggregate and version) and
-- queries wait on read.applied_versions (src/common/ctoken.h): the per-user
-- positions the projector kept for the old position tokens are read by
-- nothing any more.
drop table read.user_positions;
