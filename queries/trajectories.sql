-- trajectories: the observables in long form, one row per run, layer, point, measurement
-- model and statistic (45 statistics per layer and point). NULL values are kept.
--   SELECT point, value FROM trajectories
--   WHERE run_id = 'r1' AND layer_name = 'conv1' AND statistic = 'weightraw_median'
--   ORDER BY point;
CREATE OR REPLACE VIEW trajectories AS
SELECT run_id, layer_index, layer_name, position, model, point, step,
       kv['statistic'] AS statistic, kv['value'] AS value
FROM (
    SELECT run_id, layer_index, layer_name, position, model, point, step,
    unnest(make_array(
        named_struct('statistic', 'weightabs_kurtosis', 'value', weightabs_kurtosis),
        named_struct('statistic', 'weightabs_mean', 'value', weightabs_mean),
        named_struct('statistic', 'weightabs_median', 'value', weightabs_median),
        named_struct('statistic', 'weightabs_norm', 'value', weightabs_norm),
        named_struct('statistic', 'weightabs_skew', 'value', weightabs_skew),
        named_struct('statistic', 'weightabs_thirdquartile', 'value', weightabs_thirdquartile),
        named_struct('statistic', 'weightabs_var', 'value', weightabs_var),
        named_struct('statistic', 'weightraw_kurtosis', 'value', weightraw_kurtosis),
        named_struct('statistic', 'weightraw_mean', 'value', weightraw_mean),
        named_struct('statistic', 'weightraw_median', 'value', weightraw_median),
        named_struct('statistic', 'weightraw_norm', 'value', weightraw_norm),
        named_struct('statistic', 'weightraw_skew', 'value', weightraw_skew),
        named_struct('statistic', 'weightraw_thirdquartile', 'value', weightraw_thirdquartile),
        named_struct('statistic', 'weightraw_var', 'value', weightraw_var),
        named_struct('statistic', 'weightsq_kurtosis', 'value', weightsq_kurtosis),
        named_struct('statistic', 'weightsq_mean', 'value', weightsq_mean),
        named_struct('statistic', 'weightsq_median', 'value', weightsq_median),
        named_struct('statistic', 'weightsq_norm', 'value', weightsq_norm),
        named_struct('statistic', 'weightsq_skew', 'value', weightsq_skew),
        named_struct('statistic', 'weightsq_thirdquartile', 'value', weightsq_thirdquartile),
        named_struct('statistic', 'weightsq_var', 'value', weightsq_var),
        named_struct('statistic', 'actabs_kurtosis', 'value', actabs_kurtosis),
        named_struct('statistic', 'actabs_mean', 'value', actabs_mean),
        named_struct('statistic', 'actabs_median', 'value', actabs_median),
        named_struct('statistic', 'actabs_norm', 'value', actabs_norm),
        named_struct('statistic', 'actabs_skew', 'value', actabs_skew),
        named_struct('statistic', 'actabs_thirdquartile', 'value', actabs_thirdquartile),
        named_struct('statistic', 'actabs_var', 'value', actabs_var),
        named_struct('statistic', 'actraw_kurtosis', 'value', actraw_kurtosis),
        named_struct('statistic', 'actraw_mean', 'value', actraw_mean),
        named_struct('statistic', 'actraw_median', 'value', actraw_median),
        named_struct('statistic', 'actraw_norm', 'value', actraw_norm),
        named_struct('statistic', 'actraw_skew', 'value', actraw_skew),
        named_struct('statistic', 'actraw_thirdquartile', 'value', actraw_thirdquartile),
        named_struct('statistic', 'actraw_var', 'value', actraw_var),
        named_struct('statistic', 'actsq_kurtosis', 'value', actsq_kurtosis),
        named_struct('statistic', 'actsq_mean', 'value', actsq_mean),
        named_struct('statistic', 'actsq_median', 'value', actsq_median),
        named_struct('statistic', 'actsq_norm', 'value', actsq_norm),
        named_struct('statistic', 'actsq_skew', 'value', actsq_skew),
        named_struct('statistic', 'actsq_thirdquartile', 'value', actsq_thirdquartile),
        named_struct('statistic', 'actsq_var', 'value', actsq_var),
        named_struct('statistic', 'gradavgabs_id', 'value', gradavgabs_id),
        named_struct('statistic', 'gradavgraw_id', 'value', gradavgraw_id),
        named_struct('statistic', 'gradavgsq_id', 'value', gradavgsq_id)
    )) AS kv
    FROM observables
);
