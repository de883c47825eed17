-- classifier_examples: the classifiers' dataset (spec §2), one row per layer of a closed run
-- under one measurement model. Columns: the example's metadata (run, layer, position, model,
-- the run's labels), how many points it has (`points`, `first_point`, `last_point`), and the
-- 24 admissible statistics (spec §1.5, in the reference order) as arrays over the trajectory,
-- ordered by point. `lrid analyze` and `lrid dataset export` read exactly this view; an
-- example whose arrays are shorter than asked or hold NULL or non-finite values is left out
-- with a warning. Layer names and positions come from the observables (as in `layers`).
--   SELECT learning_rule, count(*) FROM classifier_examples WHERE model = 'ideal'
--   GROUP BY learning_rule;
CREATE OR REPLACE VIEW classifier_examples AS
SELECT o.run_id, o.layer_index, o.layer_name, o.position, o.model,
       r.learning_rule, r.architecture, r.task, r.batch_size, r.model_seed, r.data_seed,
       count(*) AS points, min(o.point) AS first_point, max(o.point) AS last_point,
       array_agg(o.weightabs_mean ORDER BY o.point) AS weightabs_mean,
       array_agg(o.weightabs_median ORDER BY o.point) AS weightabs_median,
       array_agg(o.weightabs_norm ORDER BY o.point) AS weightabs_norm,
       array_agg(o.weightabs_thirdquartile ORDER BY o.point) AS weightabs_thirdquartile,
       array_agg(o.weightabs_var ORDER BY o.point) AS weightabs_var,
       array_agg(o.weightraw_mean ORDER BY o.point) AS weightraw_mean,
       array_agg(o.weightraw_median ORDER BY o.point) AS weightraw_median,
       array_agg(o.weightraw_norm ORDER BY o.point) AS weightraw_norm,
       array_agg(o.weightraw_thirdquartile ORDER BY o.point) AS weightraw_thirdquartile,
       array_agg(o.weightraw_var ORDER BY o.point) AS weightraw_var,
       array_agg(o.weightsq_mean ORDER BY o.point) AS weightsq_mean,
       array_agg(o.weightsq_median ORDER BY o.point) AS weightsq_median,
       array_agg(o.weightsq_thirdquartile ORDER BY o.point) AS weightsq_thirdquartile,
       array_agg(o.actabs_mean ORDER BY o.point) AS actabs_mean,
       array_agg(o.actabs_median ORDER BY o.point) AS actabs_median,
       array_agg(o.actabs_norm ORDER BY o.point) AS actabs_norm,
       array_agg(o.actabs_thirdquartile ORDER BY o.point) AS actabs_thirdquartile,
       array_agg(o.actraw_mean ORDER BY o.point) AS actraw_mean,
       array_agg(o.actraw_median ORDER BY o.point) AS actraw_median,
       array_agg(o.actraw_norm ORDER BY o.point) AS actraw_norm,
       array_agg(o.actraw_thirdquartile ORDER BY o.point) AS actraw_thirdquartile,
       array_agg(o.gradavgabs_id ORDER BY o.point) AS gradavgabs_id,
       array_agg(o.gradavgraw_id ORDER BY o.point) AS gradavgraw_id,
       array_agg(o.gradavgsq_id ORDER BY o.point) AS gradavgsq_id
FROM observables o JOIN runs r ON o.run_id = r.run_id
WHERE r.status = 'closed'
GROUP BY o.run_id, o.layer_index, o.layer_name, o.position, o.model,
         r.learning_rule, r.architecture, r.task, r.batch_size, r.model_seed, r.data_seed;
